"""The `exec` group: run input or files in a session, list executions and follow their events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import click

from server.cli import lines
from server.cli.render import ExecutionPrinter, api_command, output, use_color
from server.cli.state import (
    EXIT_INTERRUPTED,
    JSON_OBJECT,
    CliState,
    LoopThread,
    call,
    error_line,
    fail_api,
    pass_state,
)
from server.client import ApiError, VmClient


@click.group("exec")
def exec_() -> None:
    """Executions: REPL input and files run in a session."""


def _follow(
    state: CliState,
    start: Callable[[VmClient], Awaitable[Mapping[str, Any]]] | None,
    execution_id: str | None,
    *,
    after_seq: int = 0,
    cancel_on_interrupt: bool,
) -> None:
    """Stream an execution's events as they arrive; Ctrl+C cancels it (or just stops following)."""
    printer = ExecutionPrinter(color=use_color(), json_lines=state.json)
    current: dict[str, str] = {}
    runner = LoopThread()

    async def go() -> None:
        async with state.client() as client:
            exec_id = str((await start(client))["id"]) if start else execution_id
            assert exec_id is not None
            current["id"] = exec_id
            async for item in client.follow_execution(exec_id, after_seq):
                (printer.event if "seq" in item else printer.final)(item)

    async def cancel(exec_id: str) -> None:
        async with state.client() as client:
            try:
                await client.cancel_execution(exec_id)
            except ApiError as exc:
                if exc.code != "EXECUTION_NOT_RUNNING":
                    click.echo(error_line(exc), err=True)

    future = runner.submit(go())
    interrupted = False
    try:
        while True:
            try:
                runner.wait(future)
                return
            except KeyboardInterrupt:
                if interrupted or not cancel_on_interrupt or "id" not in current:
                    future.cancel()
                    click.echo("interrupted", err=True)
                    raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
                interrupted = True
                click.echo("cancelling... (Ctrl+C again to stop waiting)", err=True)
                runner.submit(cancel(current["id"]))
            except ApiError as exc:
                fail_api(exc)
    finally:
        runner.stop()


def _execute(
    state: CliState,
    start: Callable[[VmClient, bool], Awaitable[dict[str, Any]]],
    *,
    wait: bool,
    follow: bool,
    with_result: bool,
) -> None:
    """--follow streams (this project's form); by default the original's lines once it ended."""
    if follow:
        _follow(state, lambda c: start(c, False), None, cancel_on_interrupt=True)
    elif wait:
        data = call(state, lambda c: start(c, True))
        output(state, data, lambda d: lines.execution_result(d, with_result=with_result))
    else:
        output(state, call(state, lambda c: start(c, False)), lines.execution_detail)


_NO_WAIT = click.option("--no-wait", is_flag=True, help="Return at once with the execution.")
_FOLLOW = click.option("--follow", is_flag=True, help="Stream the output live (Ctrl+C cancels).")


@exec_.command("repl")
@click.argument("session_id")
@click.argument("code", metavar="CODE")
@_NO_WAIT
@_FOLLOW
@pass_state
def exec_repl(state: CliState, session_id: str, code: str, no_wait: bool, follow: bool) -> None:
    """Evaluate CODE in a session, like a line typed at a REPL.

    Prints `Execution ID:`, `Status:`, `Result: <json>` and/or `Error: <json>`, then the events;
    --follow streams them as they happen instead. A JavaScript exception is not a CLI failure.
    """

    def start(c: VmClient, wait: bool) -> Awaitable[dict[str, Any]]:
        return c.repl(session_id, code, wait=wait)

    _execute(state, start, wait=not no_wait, follow=follow, with_result=True)


class EnvEntries(click.ParamType):
    """``--env``: a JSON object (the original's form) or ``KEY=VALUE`` (repeatable)."""

    name = "JSON|KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dict):
            return value
        if value.lstrip().startswith("{"):
            return JSON_OBJECT.convert(value, param, ctx)
        key, sep, rest = value.partition("=")
        if not sep or not key:
            self.fail(f"expected a JSON object or KEY=VALUE, got {value!r}", param, ctx)
        return {key: rest}


@exec_.command("run-file")
@click.argument("session_id")
@click.argument("path")
@click.option("--args", "args_", type=JSON_OBJECT, help="JSON object the script sees as __ARGS__.")
@click.option(
    "--env",
    type=EnvEntries(),
    multiple=True,
    help="__ENV__ as a JSON object, or one KEY=VALUE entry (repeatable).",
)
@_NO_WAIT
@_FOLLOW
@pass_state
def exec_run_file(
    state: CliState,
    session_id: str,
    path: str,
    args_: dict[str, Any] | None,
    env: tuple[dict[str, Any], ...],
    no_wait: bool,
    follow: bool,
) -> None:
    """Run PATH (relative to the session's worktree) in a session.

    Prints the same lines as `exec repl` without `Result:`: the value is among the events.
    """
    env_map: dict[str, Any] = {}
    for entries in env:
        env_map.update(entries)

    def start(c: VmClient, wait: bool) -> Awaitable[dict[str, Any]]:
        return c.run_file(session_id, path, args=args_, env=env_map if env else None, wait=wait)

    _execute(state, start, wait=not no_wait, follow=follow, with_result=False)


@exec_.command("list")
@click.argument("session_id")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many.")
@pass_state
def exec_list(state: CliState, session_id: str, limit: int) -> None:
    """List a session's executions, newest first."""
    data = call(state, lambda c: c.list_executions(session_id, limit=limit))
    output(state, data, lines.executions_table)


api_command(exec_, "get", "get_execution", lines.execution_detail, "Show an execution.", arg="execution_id")
api_command(
    exec_,
    "cancel",
    "cancel_execution",
    lines.execution_detail,
    "Cancel a running execution; prints it once it has ended.",
    arg="execution_id",
)


@exec_.command("events")
@click.argument("execution_id")
@click.option("--after-seq", type=click.IntRange(min=0), default=0, help="Only events after this seq.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (default 1000).")
@click.option("--follow", is_flag=True, help="Keep streaming until the execution ends.")
@pass_state
def exec_events(state: CliState, execution_id: str, after_seq: int, limit: int | None, follow: bool) -> None:
    """List an execution's events in order."""
    if follow:
        _follow(state, None, execution_id, after_seq=after_seq, cancel_on_interrupt=False)
        return
    data = call(state, lambda c: c.get_events(execution_id, after_seq=after_seq, limit=limit))
    output(state, data, lines.events_table)
