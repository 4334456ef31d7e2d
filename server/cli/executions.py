"""The `exec` group: run input or files in a session, list executions and follow their events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import click

from server.cli.render import (
    EXECUTIONS,
    ExecutionPrinter,
    as_table,
    event_detail,
    output,
    print_execution_block,
    print_execution_result,
    table,
    use_color,
)
from server.cli.state import (
    EXIT_INTERRUPTED,
    JSON_OBJECT,
    CliState,
    LoopThread,
    call,
    fail,
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
                    click.echo(f"Error: {exc.code}: {exc.message}", err=True)

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
                fail(exc.code, exc.message)
    finally:
        runner.stop()


def _execute(
    state: CliState,
    start: Callable[[VmClient, bool], Awaitable[dict[str, Any]]],
    *,
    wait: bool,
    follow: bool,
) -> None:
    if follow:
        _follow(state, lambda c: start(c, False), None, cancel_on_interrupt=True)
    elif wait:
        print_execution_result(state, call(state, lambda c: start(c, True)))
    else:
        output(state, call(state, lambda c: start(c, False)), print_execution_block)


_NO_WAIT = click.option("--no-wait", is_flag=True, help="Return at once with the execution.")
_FOLLOW = click.option("--follow", is_flag=True, help="Stream the output live (Ctrl+C cancels).")


@exec_.command("repl")
@click.argument("session_id")
@click.argument("input_", metavar="INPUT")
@_NO_WAIT
@_FOLLOW
@pass_state
def exec_repl(state: CliState, session_id: str, input_: str, no_wait: bool, follow: bool) -> None:
    """Evaluate INPUT in a session, like a line typed at a REPL."""

    def start(c: VmClient, wait: bool) -> Awaitable[dict[str, Any]]:
        return c.repl(session_id, input_, wait=wait)

    _execute(state, start, wait=not no_wait, follow=follow)


@exec_.command("run-file")
@click.argument("session_id")
@click.argument("path")
@click.option("--args", "args_", type=JSON_OBJECT, help="Object the script sees as __ARGS__.")
@click.option("--env", multiple=True, metavar="KEY=VALUE", help="Entry of __ENV__ (repeatable).")
@_NO_WAIT
@_FOLLOW
@pass_state
def exec_run_file(
    state: CliState,
    session_id: str,
    path: str,
    args_: dict[str, Any] | None,
    env: tuple[str, ...],
    no_wait: bool,
    follow: bool,
) -> None:
    """Run PATH (relative to the session's worktree) in a session."""
    env_map: dict[str, str] = {}
    for pair in env:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--env")
        env_map[key] = value

    def start(c: VmClient, wait: bool) -> Awaitable[dict[str, Any]]:
        return c.run_file(session_id, path, args=args_, env=env_map if env else None, wait=wait)

    _execute(state, start, wait=not no_wait, follow=follow)


@exec_.command("list")
@click.argument("session_id")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (default 50).")
@pass_state
def exec_list(state: CliState, session_id: str, limit: int | None) -> None:
    """List a session's executions, newest first."""
    data = call(state, lambda c: c.list_executions(session_id, limit=limit))
    output(state, data, as_table(EXECUTIONS))


@exec_.command("events")
@click.argument("execution_id", metavar="ID")
@click.option("--after-seq", type=click.IntRange(min=0), help="Only events after this seq.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (default 1000).")
@click.option("--follow", is_flag=True, help="Keep streaming until the execution ends.")
@pass_state
def exec_events(
    state: CliState, execution_id: str, after_seq: int | None, limit: int | None, follow: bool
) -> None:
    """List an execution's events in order."""
    if follow:
        _follow(state, None, execution_id, after_seq=after_seq or 0, cancel_on_interrupt=False)
        return
    data = call(state, lambda c: c.get_events(execution_id, after_seq=after_seq, limit=limit))
    rows = [{**e, "detail": event_detail(e)} for e in data]
    output(state, data, lambda _: table(rows, "seq ts type detail"))
