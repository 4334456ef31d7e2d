"""The `exec` group: run input or files in a session, list executions and follow their events."""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import click

from server.cli import lines, resolve
from server.cli.render import ID_ONLY, ExecutionPrinter, api_command, ids_of, output, use_color
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
) -> Mapping[str, Any]:
    """Stream an execution's events as they arrive; Ctrl+C cancels it (or just stops following).

    Returns the execution as it ended.
    """
    printer = ExecutionPrinter(color=use_color(), json_lines=state.json)
    current: dict[str, str] = {}
    ended: dict[str, Mapping[str, Any]] = {}
    runner = LoopThread()

    async def go() -> None:
        async with state.client() as client:
            exec_id = str((await start(client))["id"]) if start else execution_id
            assert exec_id is not None
            exec_id = await resolve.execution_id(client, exec_id)
            current["id"] = exec_id
            async for item in client.follow_execution(exec_id, after_seq):
                if "seq" in item:
                    printer.event(item)
                else:
                    ended["execution"] = item
                    printer.final(item)

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
                return ended.get("execution", {})
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


EXIT_JS_ERROR = 2  # --fail-on-error: the JavaScript threw (or failed another way)
EXIT_JS_STOPPED = 3  # --fail-on-error: a time limit or a cancel ended it


def _exit_status(execution: Mapping[str, Any]) -> int:
    status = execution.get("status")
    return (
        EXIT_JS_ERROR if status == "error" else EXIT_JS_STOPPED if status in ("timeout", "cancelled") else 0
    )


@dataclass
class RunOptions:
    """How `exec repl` / `run-file` run and print (the options both share)."""

    wait: bool
    follow: bool
    fail_on_error: bool
    id_only: bool
    queue: bool


def _execute(
    state: CliState,
    start: Callable[[VmClient, bool], Awaitable[dict[str, Any]]],
    opts: RunOptions,
    *,
    with_result: bool,
) -> None:
    """--follow streams (this project's form); by default the original's lines once it ended."""
    ended: Mapping[str, Any] = {}
    if opts.follow:
        ended = _follow(state, lambda c: start(c, False), None, cancel_on_interrupt=True)
    elif opts.wait:
        ended = call(state, lambda c: start(c, True))
        human = ids_of if opts.id_only else lambda d: lines.execution_result(d, with_result=with_result)
        output(state, ended, human)
    else:
        output(
            state, call(state, lambda c: start(c, False)), ids_of if opts.id_only else lines.execution_detail
        )
    if opts.fail_on_error and _exit_status(ended):
        raise click.exceptions.Exit(_exit_status(ended))


def _run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options `exec repl` and `exec run-file` share, gathered into one `opts: RunOptions`."""

    @click.option("--no-wait", is_flag=True, help="Return at once with the execution.")
    @click.option(
        "--follow/--no-follow",
        default=None,
        help="Stream the output live (Ctrl+C cancels). The default on a terminal; --no-follow "
        "prints the original's lines once it ended.",
    )
    @click.option(
        "--fail-on-error",
        is_flag=True,
        help="Exit 2 when the JavaScript fails, 3 on a timeout or a cancel (default: exit 0).",
    )
    @click.option("--queue", is_flag=True, help="Wait for a busy session instead of failing (SESSION_BUSY).")
    @ID_ONLY
    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        no_wait: bool,
        follow: bool | None,
        fail_on_error: bool,
        queue: bool,
        id_only: bool,
        **kwargs: Any,
    ) -> Any:
        state = click.get_current_context().find_object(CliState)
        assert state is not None
        if follow is None:  # live on a terminal, where a person watches; scripts get the lines
            follow = sys.stdout.isatty() and not state.json and not no_wait and not id_only
        opts = RunOptions(not no_wait, bool(follow), fail_on_error, id_only, queue)
        return fn(*args, opts=opts, **kwargs)

    return wrapper


def _code(code: str) -> str:
    """CODE, or the code read from stdin when CODE is `-` (as `node -` does)."""
    return sys.stdin.read() if code == "-" else code


@exec_.command("repl")
@click.argument("session_id")
@click.argument("code", metavar="CODE")
@_run_options
@pass_state
def exec_repl(state: CliState, session_id: str, code: str, opts: RunOptions) -> None:
    """Evaluate CODE in a session, like a line typed at a REPL (CODE `-` reads stdin).

    Prints `Execution ID:`, `Status:`, `Result: <json>` and/or `Error: <json>`, then the events;
    --follow (the default on a terminal) streams them as they happen instead. A JavaScript
    exception is not a CLI failure unless --fail-on-error is given.
    """
    source = _code(code)

    async def start(c: VmClient, wait: bool) -> dict[str, Any]:
        sid = await resolve.session_id(c, session_id)
        return await c.repl(sid, source, wait=wait, queue=opts.queue or None)

    _execute(state, start, opts, with_result=True)


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
@_run_options
@pass_state
def exec_run_file(
    state: CliState,
    session_id: str,
    path: str,
    args_: dict[str, Any] | None,
    env: tuple[dict[str, Any], ...],
    opts: RunOptions,
) -> None:
    """Run PATH (relative to the session's worktree) in a session.

    Prints the same lines as `exec repl` without `Result:`: the value is among the events.
    """
    env_map: dict[str, Any] = {}
    for entries in env:
        env_map.update(entries)

    async def start(c: VmClient, wait: bool) -> dict[str, Any]:
        sid = await resolve.session_id(c, session_id)
        env_ = env_map if env else None
        return await c.run_file(sid, path, args=args_, env=env_, wait=wait, queue=opts.queue or None)

    _execute(state, start, opts, with_result=False)


@exec_.command("list")
@click.argument("session_id")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many.")
@ID_ONLY
@pass_state
def exec_list(state: CliState, session_id: str, limit: int, id_only: bool) -> None:
    """List a session's executions, newest first."""

    async def go(c: VmClient) -> list[dict[str, Any]]:
        return await c.list_executions(await resolve.session_id(c, session_id), limit=limit)

    output(state, call(state, go), ids_of if id_only else lines.executions_table)


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

    async def go(c: VmClient) -> list[dict[str, Any]]:
        eid = await resolve.execution_id(c, execution_id)
        return await c.get_events(eid, after_seq=after_seq, limit=limit)

    output(state, call(state, go), lines.events_table)
