"""The `vm-system` command: the server, a REST/WebSocket client and the library cache."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from server.client import ApiError, VmClient

T = TypeVar("T")

DEFAULT_SERVER_URL = "http://127.0.0.1:3210"
EXIT_API_ERROR = 1
EXIT_INTERRUPTED = 130

# --------------------------------------------------------------------------------------------
# Shared plumbing


@dataclass
class CliState:
    server_url: str
    json: bool
    token: str | None

    def client(self) -> VmClient:
        return VmClient(self.server_url, token=self.token)


pass_state = click.make_pass_decorator(CliState)


def _fail(code: str, message: str, exit_code: int = EXIT_API_ERROR) -> NoReturn:
    click.echo(f"Error: {code}: {message}", err=True)
    raise click.exceptions.Exit(exit_code)


def _call(state: CliState, fn: Callable[[VmClient], Awaitable[T]]) -> T:
    """Run one API call on a fresh client; an `ApiError` ends the command with exit status 1."""

    async def go() -> T:
        async with state.client() as client:
            return await fn(client)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        _fail(exc.code, exc.message)


def _use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _echo_json(data: Any, *, compact: bool = False) -> None:
    if compact:
        click.echo(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    else:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _cell(value: Any, width: int = 60) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value) or "-"
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


def _lookup(row: Mapping[str, Any], key: str) -> Any:
    """`a|b` is the first of a, b that is set; `a.b` reads a nested key; `*_at` is shortened."""
    for alternative in key.split("|"):
        value: Any = row
        for part in alternative.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            if alternative.endswith("_at") and isinstance(value, str):
                return value[:19].replace("T", " ")  # 2024-05-01 12:34:56 in tables
            return value
    return None


def _table(rows: Iterable[Mapping[str, Any]], spec: str) -> None:
    """Print rows as aligned columns; `spec` lists `key[=HEADER]` words (see `_lookup`)."""
    rows = list(rows)
    if not rows:
        click.echo("(none)")
        return
    columns = [(w.partition("=")[0], w.partition("=")[2] or w) for w in spec.split()]
    cells = [[_cell(_lookup(row, key), 50) for key, _ in columns] for row in rows]
    heads = [head.upper() for _, head in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(heads)]
    for line in [heads, *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _block(obj: Mapping[str, Any], keys: str | None = None) -> None:
    """Print `key: value` lines, for `keys` (space-separated) or every key."""
    shown = [k for k in (keys.split() if keys else obj.keys()) if k in obj]
    width = max((len(k) for k in shown), default=0) + 1
    for key in shown:
        click.echo(f"{(key + ':').ljust(width)} {_cell(obj[key], width=10_000)}")


def _names(names: list[str]) -> None:
    click.echo("\n".join(names) if names else "(none)")


def _output(state: CliState, data: Any, human: Callable[[Any], None]) -> None:
    if state.json:
        _echo_json(data)
    else:
        human(data)


def _as_table(spec: str) -> Callable[[Any], None]:
    return lambda rows: _table(rows, spec)


def _as_block(keys: str | None = None) -> Callable[[Any], None]:
    return lambda obj: _block(obj, keys)


class JsonObject(click.ParamType):
    """A command-line value that must be a JSON object."""

    name = "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(f"not valid JSON ({exc}): {value!r}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"must be a JSON object such as '{{\"key\": 1}}': {value!r}", param, ctx)
        return parsed


JSON_OBJECT = JsonObject()


class _LoopThread:
    """An event loop in a background thread, so the main thread keeps Ctrl+C and `input()`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @staticmethod
    def wait(future: concurrent.futures.Future[T]) -> T:
        while True:  # short waits so a KeyboardInterrupt reaches the main thread promptly
            try:
                return future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                continue

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.wait(self.submit(coro))

    def stop(self) -> None:
        async def cancel_all() -> None:
            # Let abandoned work unwind (closing its HTTP session) instead of dying mid-flight.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.submit(cancel_all()).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


# --------------------------------------------------------------------------------------------
# Execution rendering

_LEVEL_STYLE: dict[str, dict[str, Any]] = {
    "warn": {"fg": "yellow"},
    "error": {"fg": "red"},
    "debug": {"dim": True},
    "info": {"fg": "cyan"},
}
_VALUE_STYLE: dict[str, dict[str, Any]] = {
    **dict.fromkeys(["number", "bigint", "boolean"], {"fg": "yellow"}),
    **dict.fromkeys(["string", "symbol"], {"fg": "green"}),
    "undefined": {"dim": True},
    "null": {"bold": True},
    "function": {"fg": "cyan"},
    "date": {"fg": "magenta"},
    "regexp": {"fg": "red"},
}


def _quote_js(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


class ExecutionPrinter:
    """Prints events as they come (console lines, value, exception), then the final status."""

    def __init__(self, *, color: bool, json_lines: bool = False, interactive: bool = False):
        self.color = color
        self.json_lines = json_lines  # NDJSON: one event or execution per line
        self.interactive = interactive
        self.saw_terminal = False

    def _echo(self, text: str, **style: Any) -> None:
        click.echo(click.style(text, **style) if style else text, color=self.color)

    def event(self, event: Mapping[str, Any]) -> None:
        if self.json_lines:
            _echo_json(event, compact=True)
            return
        payload = event.get("payload") or {}
        kind = event.get("type")
        if kind == "console":
            level, text = str(payload.get("level", "log")), str(payload.get("text", ""))
            if level == "log" and self.interactive:
                self._echo(text)
            else:
                self._echo(f"[{level}] {text}", **_LEVEL_STYLE.get(level, {}))
        elif kind == "value":
            self.saw_terminal = True
            vtype, preview = str(payload.get("type", "")), str(payload.get("preview", ""))
            if self.interactive and vtype == "string":
                preview = _quote_js(preview)  # tell "42" from 42 at the prompt
            self._echo(f"=> {preview}", **_VALUE_STYLE.get(vtype, {}))
        elif kind == "exception":
            self.saw_terminal = True
            message = str(payload.get("message") or payload.get("name") or "exception")
            self._echo(f"Uncaught {message}", fg="red", bold=True)
            stack = payload.get("stack")
            lines = stack.rstrip().splitlines() if isinstance(stack, str) else []
            if lines and lines[0].strip() == message.strip():
                lines = lines[1:]  # V8-style stacks repeat the message
            for line in lines:
                self._echo(line if line.startswith(" ") else "    " + line, dim=True)
        elif kind == "system":
            level = str(payload.get("level", "info"))
            style = _LEVEL_STYLE.get(level, {"dim": True})
            self._echo(f"[system] {payload.get('message', '')}", **style)
        elif kind != "input_echo":  # the user just typed the input
            self._echo(f"[{kind}] {json.dumps(payload, ensure_ascii=False)}", dim=True)

    def final(self, execution: Mapping[str, Any]) -> None:
        if self.json_lines:
            _echo_json(execution, compact=True)
            return
        status = str(execution.get("status", "?"))
        error = execution.get("error")
        if not isinstance(error, Mapping):
            error = None
        if status == "error" and not self.saw_terminal and error:
            # An error without an exception event: a limit or an interruption.
            label = error.get("code") or error.get("name") or "Error"
            self._echo(f"Uncaught {label}: {error.get('message', '')}", fg="red")
        metrics = execution.get("metrics")
        wall = metrics.get("wall_ms") if isinstance(metrics, Mapping) else None
        line = f"status: {status}"
        if isinstance(wall, int | float):
            line += f" ({wall:.1f} ms)"
        if status in ("timeout", "cancelled") and error:
            line += f" {error.get('code', '')}: {error.get('message', '')}".rstrip(": ")
        if status == "ok":
            if not self.interactive:
                self._echo(line, dim=True)
        elif status == "error":
            if not self.interactive:
                self._echo(line, fg="red")
        else:
            self._echo(line, fg="yellow")


def _print_execution_result(state: CliState, execution: Mapping[str, Any]) -> None:
    """Output of a REST execution that waited: its events, then the status line."""
    if state.json:
        _echo_json(execution)
        return
    printer = ExecutionPrinter(color=_use_color())
    for event in execution.get("events") or []:
        printer.event(event)
    printer.final(execution)


def _print_execution_block(execution: Mapping[str, Any]) -> None:
    _block(execution, "id session_id kind status input path args env started_at ended_at metrics")
    result, error = execution.get("result"), execution.get("error")
    if isinstance(result, Mapping):
        click.echo(f"{'result:':11} {result.get('preview')} ({result.get('type')})")
    if isinstance(error, Mapping):
        label = error.get("code") or error.get("name") or "error"
        click.echo(f"{'error:':11} {label}: {error.get('message', '')}")


def _follow(
    state: CliState,
    start: Callable[[VmClient], Awaitable[Mapping[str, Any]]] | None,
    execution_id: str | None,
    *,
    after_seq: int = 0,
    cancel_on_interrupt: bool,
) -> None:
    """Stream an execution's events as they arrive; Ctrl+C cancels it (or just stops following)."""
    printer = ExecutionPrinter(color=_use_color(), json_lines=state.json)
    current: dict[str, str] = {}
    runner = _LoopThread()

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
                _fail(exc.code, exc.message)
    finally:
        runner.stop()


# --------------------------------------------------------------------------------------------
# Root group and serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server-url",
    envvar="VM_SYSTEM_URL",
    default=DEFAULT_SERVER_URL,
    show_default=True,
    help="Base URL of the vm-system server (env VM_SYSTEM_URL).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")
@click.option("--token", envvar="VM_SYSTEM_TOKEN", help="Bearer token (env VM_SYSTEM_TOKEN).")
@click.version_option(package_name="vm-system", prog_name="vm-system")
@click.pass_context
def cli(ctx: click.Context, server_url: str, as_json: bool, token: str | None) -> None:
    """Long-lived JavaScript sessions on QuickJS: server and command-line client."""
    ctx.obj = CliState(server_url=server_url, json=as_json, token=token or None)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="vm-system")


@cli.command()
@click.option("--listen", help="HOST:PORT to listen on (default 127.0.0.1:3210).")
@click.option("--db", help="Database: a SQLite file path or a postgresql:// URL.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Library cache directory.")
@click.option("--max-sessions", type=int, help="Maximum live sessions (0 = unlimited).")
@click.option("--idle-timeout", type=float, help="Close sessions idle this many seconds (0 = off).")
@click.option("--token", help="Require this bearer token on every request.")
@click.option("--allowed-origins", help="Comma-separated browser origins allowed on the WebSocket.")
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
@pass_state
def serve(
    state: CliState,
    listen: str | None,
    db: str | None,
    cache_dir: str | None,
    max_sessions: int | None,
    idle_timeout: float | None,
    token: str | None,
    allowed_origins: str | None,
    log_level: str | None,
) -> None:
    """Run the API server."""
    from server.config import ConfigError, Settings
    from server.core.errors import DomainError

    try:
        settings = Settings.from_env(
            listen=listen,
            db_url=db,
            cache_dir=cache_dir,
            max_sessions=max_sessions,
            idle_timeout_s=idle_timeout,
            token=token if token is not None else state.token,
            allowed_origins=allowed_origins,
            log_level=log_level.upper() if log_level else None,
        )
        from server.app import run_server

        run_server(settings)
    except ConfigError as exc:
        _fail("CONFIG", str(exc), exit_code=2)
    except DomainError as exc:  # e.g. the store cannot be opened; the log has the details
        _fail(exc.code, exc.message)
    except OSError as exc:  # e.g. the address is already in use
        _fail("SERVE", f"cannot start the server: {exc}")


# --------------------------------------------------------------------------------------------
# Commands that take ids/names and print the response

_TEMPLATES = "id name engine exposed_modules=modules libraries created_at"
_TEMPLATE_KEYS = "id name engine is_active exposed_modules libraries created_at updated_at"
_CAPABILITIES = "id kind name enabled config"
_STARTUP_FILES = "id order_index=order mode path"
_SESSIONS = "id status vm_id=template workspace_id=workspace created_at"
_SESSION_KEYS = "id status vm_id workspace_id base_commit_oid worktree_path created_at closed_at"
_SESSION_KEYS += " last_error runtime_meta"
_EXECUTIONS = "id kind status started_at metrics.wall_ms=wall_ms input|path=input"
_LIBRARIES = "name global cached description"


def _print_template_detail(detail: Mapping[str, Any]) -> None:
    _block(detail.get("template") or {}, _TEMPLATE_KEYS)
    settings = detail.get("settings") or {}
    for section in ("limits", "resolver", "runtime"):
        values = settings.get(section)
        if isinstance(values, Mapping):
            text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in values.items())
            click.echo(f"{section + ':':16} {text or '-'}")
    click.echo("\ncapabilities:")
    _table(detail.get("capabilities") or [], _CAPABILITIES)
    click.echo("\nstartup files:")
    _table(detail.get("startup_files") or [], _STARTUP_FILES)


@cli.group()
def template() -> None:
    """Templates: what a session is built from (limits, modules, libraries, startup files)."""


@cli.group()
def session() -> None:
    """Sessions: live JavaScript runtimes built from a template."""


@cli.group("exec")
def exec_() -> None:
    """Executions: REPL input and files run in a session."""


@cli.group()
def ops() -> None:
    """Server health and runtime state."""


_HELP = {
    "template list": "List templates, newest first.",
    "template get": "Show a template with its settings, capabilities and startup files.",
    "template delete": "Delete a template (sessions made from it keep running).",
    "template list-capabilities": "List a template's capabilities.",
    "template list-startup": "List a template's startup files in run order.",
    "template add-module": "Enable a native module (fs, database, exec) in a template.",
    "template remove-module": "Remove a native module from a template.",
    "template list-modules": "List the native modules a template enables.",
    "template add-library": "Add a catalog library (e.g. lodash-4.17.21) to a template.",
    "template remove-library": "Remove a library from a template.",
    "template list-libraries": "List the libraries a template loads, in order.",
    "template list-available-modules": "List the native modules a template can enable.",
    "template list-available-libraries": "List the library catalog as the server sees it.",
    "session get": "Show a session.",
    "session close": "Close a session (idempotent).",
    "exec get": "Show an execution.",
    "exec cancel": "Cancel a running execution.",
    "ops health": "Check that the server and its store answer.",
    "ops runtime-summary": "Live sessions and running executions.",
}


def _simple(group: click.Group, name: str, args: str, method: str, human: Callable[[Any], None]) -> None:
    """Add `group name ARGS...` that calls `VmClient.<method>(*ARGS)` and prints the answer."""
    names = args.split()

    def callback(**values: str) -> None:
        state = click.get_current_context().find_object(CliState)
        assert state is not None
        data = _call(state, lambda c: getattr(c, method)(*(values[n] for n in names)))
        _output(state, data, human)

    params: list[click.Parameter] = [
        click.Argument([n], metavar="ID" if n == "id" else n.upper()) for n in names
    ]
    help_ = _HELP[f"{group.name} {name}"]
    group.add_command(click.Command(name, callback=callback, params=params, help=help_))


def _said(verb: str, noun: str, key: str = "name") -> Callable[[Any], None]:
    return lambda d: click.echo(f"{verb} {noun} {d.get(key)}")


_T, _S, _E = template, session, exec_
for _group, _name, _args, _method, _human in [
    (_T, "list", "", "list_templates", _as_table(_TEMPLATES)),
    (_T, "get", "id", "get_template", _print_template_detail),
    (_T, "delete", "id", "delete_template", _said("Deleted", "template", "template_id")),
    (_T, "list-capabilities", "id", "list_capabilities", _as_table(_CAPABILITIES)),
    (_T, "list-startup", "id", "list_startup_files", _as_table(_STARTUP_FILES)),
    (_T, "add-module", "id name", "add_template_module", _said("Added", "module")),
    (_T, "remove-module", "id name", "remove_template_module", _said("Removed", "module")),
    (_T, "list-modules", "id", "list_template_modules", _names),
    (_T, "add-library", "id name", "add_template_library", _said("Added", "library")),
    (_T, "remove-library", "id name", "remove_template_library", _said("Removed", "library")),
    (_T, "list-libraries", "id", "list_template_libraries", _names),
    (_T, "list-available-modules", "", "list_modules", _as_table("name functions description")),
    (_T, "list-available-libraries", "", "list_libraries", _as_table(_LIBRARIES)),
    (_S, "get", "id", "get_session", _as_block(_SESSION_KEYS)),
    (_S, "close", "id", "close_session", _as_block(_SESSION_KEYS)),
    (_E, "get", "id", "get_execution", _print_execution_block),
    (_E, "cancel", "id", "cancel_execution", _print_execution_block),
    (ops, "health", "", "health", _as_block()),
    (ops, "runtime-summary", "", "runtime_summary", _as_block()),
]:
    _simple(_group, _name, _args, _method, _human)


# --------------------------------------------------------------------------------------------
# template, session and exec commands with options


@template.command("create")
@click.argument("name")
@click.option("--engine", help="JavaScript engine (only quickjs).")
@pass_state
def template_create(state: CliState, name: str, engine: str | None) -> None:
    """Create a template."""
    data = _call(state, lambda c: c.create_template(name, engine=engine))
    _output(state, data, _as_block(_TEMPLATE_KEYS))


def _limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for key, what in reversed(
        [
            ("cpu_ms", "CPU time per execution, ms"),
            ("wall_ms", "elapsed time per execution, ms"),
            ("mem_mb", "memory, MiB"),
            ("max_events", "events per execution"),
            ("max_output_kb", "console output per execution, KiB"),
        ]
    ):
        flag = "--" + key.replace("_", "-")
        help_ = f"Limit: {what} (0 = none)."
        fn = click.option(flag, key, type=click.IntRange(min=0), help=help_)(fn)
    return fn


@template.command("update")
@click.argument("template_id", metavar="ID")
@click.option("--name", help="New name.")
@click.option("--limits", type=JSON_OBJECT, help="Limits as JSON, e.g. '{\"cpu_ms\": 1000}'.")
@_limit_options
@click.option("--runtime", type=JSON_OBJECT, help="Runtime as JSON, e.g. '{\"strict\": true}'.")
@click.option("--resolver", type=JSON_OBJECT, help="Resolver settings as JSON.")
@pass_state
def template_update(
    state: CliState,
    template_id: str,
    name: str | None,
    limits: dict[str, Any] | None,
    runtime: dict[str, Any] | None,
    resolver: dict[str, Any] | None,
    **limit_flags: int | None,
) -> None:
    """Rename a template or change its settings (merged key by key; flags win over --limits)."""
    merged = {**(limits or {}), **{k: v for k, v in limit_flags.items() if v is not None}}
    settings = {"limits": merged or None, "runtime": runtime, "resolver": resolver}
    settings = {k: v for k, v in settings.items() if v is not None}
    if name is None and not settings:
        raise click.UsageError(
            "nothing to update: pass --name, --limits (or --cpu-ms, --wall-ms, ...), --runtime or --resolver"
        )
    data = _call(state, lambda c: c.update_template(template_id, name=name, settings=settings))
    _output(state, data, _print_template_detail)


@template.command("add-capability")
@click.argument("template_id", metavar="ID")
@click.option("--kind", required=True, help="module, global, fs, net or env.")
@click.option("--name", required=True, help="Capability name.")
@click.option("--config", type=JSON_OBJECT, help="Configuration as a JSON object.")
@click.option("--disabled", is_flag=True, help="Add it disabled.")
@pass_state
def template_add_capability(
    state: CliState,
    template_id: str,
    kind: str,
    name: str,
    config: dict[str, Any] | None,
    disabled: bool,
) -> None:
    """Add a capability to a template."""
    data = _call(
        state,
        lambda c: c.add_capability(template_id, kind=kind, name=name, enabled=not disabled, config=config),
    )
    _output(state, data, _as_block())


@template.command("add-startup")
@click.argument("template_id", metavar="ID")
@click.argument("path")
@click.option("--order", "order_index", type=int, help="Position in the startup sequence.")
@click.option("--mode", help="Startup mode (only eval).")
@pass_state
def template_add_startup(
    state: CliState, template_id: str, path: str, order_index: int | None, mode: str | None
) -> None:
    """Add a startup file (a path relative to the session's worktree)."""
    data = _call(state, lambda c: c.add_startup_file(template_id, path, order_index=order_index, mode=mode))
    _output(state, data, _as_block())


@session.command("create")
@click.option("--template-id", required=True, help="Template to build the session from.")
@click.option("--workspace-id", required=True, help="Workspace the session belongs to.")
@click.option("--base-commit", required=True, help="Commit the worktree is checked out at.")
@click.option("--worktree-path", required=True, help="Absolute path of an existing directory.")
@pass_state
def session_create(
    state: CliState, template_id: str, workspace_id: str, base_commit: str, worktree_path: str
) -> None:
    """Create a session (runs the template's libraries and startup files)."""
    data = _call(
        state,
        lambda c: c.create_session(
            template_id=template_id,
            workspace_id=workspace_id,
            base_commit_oid=base_commit,
            worktree_path=worktree_path,
        ),
    )
    _output(state, data, _as_block(_SESSION_KEYS))


@session.command("list")
@click.option("--status", help="Only sessions in this status (starting, ready, crashed, closed).")
@click.option("--template-id", help="Only sessions built from this template.")
@pass_state
def session_list(state: CliState, status: str | None, template_id: str | None) -> None:
    """List sessions, newest first."""
    data = _call(state, lambda c: c.list_sessions(status=status, template_id=template_id))
    _output(state, data, _as_table(_SESSIONS))


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
        _print_execution_result(state, _call(state, lambda c: start(c, True)))
    else:
        _output(state, _call(state, lambda c: start(c, False)), _print_execution_block)


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
    data = _call(state, lambda c: c.list_executions(session_id, limit=limit))
    _output(state, data, _as_table(_EXECUTIONS))


def _event_detail(event: Mapping[str, Any]) -> str:
    payload = event.get("payload") or {}
    kind = event.get("type")
    if kind == "console":
        return f"[{payload.get('level')}] {payload.get('text')}"
    if kind == "value":
        return f"=> {payload.get('preview')}"
    if kind in ("exception", "input_echo"):
        return str(payload.get("message") or payload.get("text"))
    if kind == "system":
        return f"[{payload.get('level')}] {payload.get('message')}"
    return json.dumps(payload, ensure_ascii=False)


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
    data = _call(state, lambda c: c.get_events(execution_id, after_seq=after_seq, limit=limit))
    rows = [{**e, "detail": _event_detail(e)} for e in data]
    _output(state, data, lambda _: _table(rows, "seq ts type detail"))


# --------------------------------------------------------------------------------------------
# repl (interactive)

_REGEX_PRECEDERS = set("(,=:[!&|?{};+-*%<>~^")
_CONTINUATION_CHARS = set("+-*%&|^!~<>=?:,.")
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def is_incomplete(source: str) -> bool:
    """Heuristic: does this JavaScript need more lines (open bracket, string, trailing operator)?

    Errs towards "complete" on anything odd, so the server reports the syntax error.
    """
    stack: list[str] = []
    significant: list[str] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if stack and stack[-1] == "`":  # inside a template literal
            if c == "\\":
                i += 2
            elif c == "`":
                stack.pop()
                significant.append("`")
                i += 1
            elif source.startswith("${", i):
                stack.append("${")
                i += 2
            else:
                i += 1
            continue
        if c in "\"'":
            j = i + 1
            while j < n and source[j] != c and source[j] != "\n":
                j += 2 if source[j] == "\\" else 1
            significant.append("s")
            i = j + 1
            continue
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                return True
            i = end + 2
            continue
        if c == "/":
            prev = next((ch for ch in reversed(significant) if not ch.isspace()), "")
            if prev == "" or prev in _REGEX_PRECEDERS:
                j, in_class = i + 1, False
                while j < n and source[j] != "\n":
                    ch = source[j]
                    if ch == "\\":
                        j += 2
                        continue
                    if ch == "[":
                        in_class = True
                    elif ch == "]":
                        in_class = False
                    elif ch == "/" and not in_class:
                        break
                    j += 1
                significant.append("r")
                i = j + 1
                continue
        if c == "`":
            stack.append("`")
        elif c in "([{":
            stack.append(c)
        elif c in _CLOSERS:
            if c == "}" and stack and stack[-1] == "${":
                stack.pop()  # back inside the template literal
                i += 1
                continue
            if not stack or stack[-1] != _CLOSERS[c]:
                return False
            stack.pop()
        if not c.isspace():
            significant.append(c)
        i += 1
    if stack:
        return True
    tail = "".join(significant[-2:])
    if tail in ("++", "--"):
        return False
    return bool(tail) and tail[-1] in _CONTINUATION_CHARS


class ReplShell:
    """Interactive REPL over the WebSocket (REST polling when the server has none)."""

    def __init__(self, state: CliState, session_id: str) -> None:
        self.state = state
        self.session_id = session_id
        self.interactive = sys.stdin.isatty()
        self.color = _use_color()
        self.history_path = Path.home() / ".vm-system" / "history"
        self.runner = _LoopThread()
        self.client: VmClient | None = None
        self.sock: Any = None  # VmSocket, or None when the server has no WebSocket endpoint
        self.ws_supported = True
        self.execution_id: str | None = None
        self.cancel_requested = False
        self._eof = False
        self._readline: Any = None

    # -- event-loop side --------------------------------------------------------------------

    async def _open(self) -> dict[str, Any]:
        self.client = self.state.client()
        info = await self.client.get_session(self.session_id)
        await self._connect()
        return info

    async def _connect(self) -> None:
        assert self.client is not None
        if not self.ws_supported:
            return
        try:
            self.sock = await self.client.connect_ws()
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.ws_supported = False
            self.sock = None

    async def _close(self) -> None:
        if self.sock is not None:
            await self.sock.close()
        if self.client is not None:
            await self.client.close()

    async def _execute(self, source: str, printer: ExecutionPrinter) -> None:
        assert self.client is not None
        if self.ws_supported and (self.sock is None or self.sock.closed):
            await self._connect()
        cursor, final = 0, None
        if self.sock is not None:
            msg = {"type": "execute", "session_id": self.session_id, "input": source}
            reply = await self.sock.request(msg)
            self.execution_id = str(reply["execution"]["id"])
            if self.cancel_requested:
                await self._cancel()
            try:
                async for item in self.sock.follow(reply.get("subscription")):
                    if "seq" in item:
                        cursor = item["seq"]
                        printer.event(item)
                    else:
                        final = item
                printer.final(final or await self.client.get_execution(self.execution_id))
                return
            except ApiError as exc:
                if exc.code != "DISCONNECTED":
                    raise
                # Lost the socket mid-execution: resume from the cursor below.
        else:
            execution = await self.client.repl(self.session_id, source, wait=False)
            self.execution_id = str(execution["id"])
            if self.cancel_requested:
                await self._cancel()
        async for item in self.client.follow_execution(self.execution_id, cursor):
            (printer.event if "seq" in item else printer.final)(item)

    async def _cancel(self) -> None:
        if self.execution_id is None:
            return
        try:
            if self.sock is not None and not self.sock.closed:
                await self.sock.request({"type": "cancel", "execution_id": self.execution_id})
            else:
                assert self.client is not None
                await self.client.cancel_execution(self.execution_id)
        except ApiError as exc:
            if exc.code not in ("EXECUTION_NOT_RUNNING", "DISCONNECTED"):
                self._error(exc)

    # -- terminal side ----------------------------------------------------------------------

    def _error(self, exc: ApiError) -> None:
        click.echo(f"Error: {exc.code}: {exc.message}", err=True)

    def _note(self, text: str) -> None:
        click.echo(click.style(text, dim=True), err=True, color=self.color)

    def _setup_history(self) -> None:
        if not self.interactive:
            return
        try:
            import readline
        except ImportError:  # no line editing on this platform; input() still works
            return
        self._readline = readline
        readline.set_history_length(1000)
        try:
            readline.read_history_file(self.history_path)
        except (FileNotFoundError, OSError):
            pass

    def _save_history(self) -> None:
        if self._readline is None:
            return
        try:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(self.history_path)
        except OSError as exc:
            self._note(f"could not save the history to {self.history_path}: {exc}")

    def _read_statement(self) -> str:
        lines: list[str] = []
        start = self._readline.get_current_history_length() if self._readline else 0
        while True:
            prompt = ("> " if not lines else "... ") if self.interactive else ""
            try:
                line = input(prompt)
            except EOFError:
                if not lines:
                    raise
                self._eof = True  # piped input ended mid-statement: let the server judge it
                return "\n".join(lines)
            lines.append(line)
            source = "\n".join(lines)
            if not is_incomplete(source):
                break
        if self._readline is not None and len(lines) > 1:
            # Keep a multi-line statement as one history entry.
            for pos in range(self._readline.get_current_history_length() - 1, start - 1, -1):
                self._readline.remove_history_item(pos)
            self._readline.add_history(source)
        return source

    def _run_statement(self, source: str) -> None:
        self.execution_id = None
        self.cancel_requested = False
        printer = ExecutionPrinter(color=self.color, interactive=True)
        future = self.runner.submit(self._execute(source, printer))
        while True:
            try:
                self.runner.wait(future)
                return
            except KeyboardInterrupt:
                if self.cancel_requested:
                    future.cancel()
                    self._note("(stopped waiting; the execution may still be running)")
                    return
                self.cancel_requested = True
                self._note("cancelling... (Ctrl+C again to stop waiting)")
                self.runner.submit(self._cancel())
            except ApiError as exc:
                self._error(exc)
                return
            except concurrent.futures.CancelledError:
                return

    def run(self) -> int:
        try:
            info = self.runner.run(self._open())
        except ApiError as exc:
            self.runner.run(self._close())
            self.runner.stop()
            _fail(exc.code, exc.message)
        try:
            status = info.get("status")
            if status != "ready":
                _fail("SESSION_NOT_READY", f"session {info.get('id')} is {status}, not ready")
            if self.interactive:
                transport = "WebSocket" if self.sock is not None else "REST polling"
                self._note(
                    f"session {info.get('id')} ({transport}). Ctrl+C cancels a running "
                    f"execution or clears the line, Ctrl+D exits, .help for help."
                )
            self._setup_history()
            while not self._eof:
                try:
                    source = self._read_statement()
                except EOFError:
                    if self.interactive:
                        click.echo()
                    break
                except KeyboardInterrupt:
                    click.echo()
                    continue
                command = source.strip()
                if not command:
                    continue
                if command in (".exit", ".quit"):
                    break
                if command == ".help":
                    self._note(
                        "Type JavaScript; state persists across inputs. Unfinished input "
                        "(open brackets, trailing operator) continues on the next line.\n"
                        ".exit leaves, Ctrl+C cancels or clears, Ctrl+D exits."
                    )
                    continue
                self._run_statement(source)
        finally:
            self._save_history()
            try:
                self.runner.run(self._close())
            except ApiError:
                pass
            self.runner.stop()
        return 0


@cli.command("repl")
@click.argument("session_id")
@pass_state
def repl(state: CliState, session_id: str) -> None:
    """Interactive JavaScript REPL in a session."""
    ReplShell(state, session_id).run()


# --------------------------------------------------------------------------------------------
# libs (local, on the cache directory)

_CACHE_DIR_OPTION = click.option(
    "--cache-dir",
    envvar="VM_SYSTEM_CACHE_DIR",
    type=click.Path(file_okay=False),
    help="Library cache directory (env VM_SYSTEM_CACHE_DIR; default .vm-cache/libraries).",
)


def _cache_dir(value: str | None) -> Path:
    from server.runtime import libraries

    return Path(value).expanduser() if value else libraries.default_cache_dir()


@cli.group()
def libs() -> None:
    """The local JavaScript library cache (works without a server)."""


@libs.command("list")
@_CACHE_DIR_OPTION
@pass_state
def libs_list(state: CliState, cache_dir: str | None) -> None:
    """List the library catalog and what is cached."""
    from server.runtime import libraries

    _output(state, libraries.catalog_json(_cache_dir(cache_dir)), _as_table(_LIBRARIES))


@libs.command("download")
@click.argument("names", nargs=-1)
@_CACHE_DIR_OPTION
@click.option("--registry", help="npm registry URL (default https://registry.npmjs.org).")
@click.option("--force", is_flag=True, help="Download again even when cached.")
@pass_state
def libs_download(
    state: CliState,
    names: tuple[str, ...],
    cache_dir: str | None,
    registry: str | None,
    force: bool,
) -> None:
    """Download catalog libraries (all when no NAMES) into the cache."""
    from server.runtime import libraries

    kwargs: dict[str, Any] = {"force": force}
    if registry:
        kwargs["registry"] = registry
    try:
        data = libraries.download(_cache_dir(cache_dir), list(names) or None, **kwargs)
    except libraries.LibraryDownloadError as exc:
        _fail("DOWNLOAD_FAILED", str(exc))
    _output(state, data, _as_table("name status bytes path"))


@libs.command("cache-info")
@_CACHE_DIR_OPTION
@pass_state
def libs_cache_info(state: CliState, cache_dir: str | None) -> None:
    """Show the cache directory and its files."""
    from server.runtime import libraries

    def human(info: Mapping[str, Any]) -> None:
        _block(info, "dir exists total_bytes")
        _table(info.get("files") or [], "name bytes")

    _output(state, libraries.cache_info(_cache_dir(cache_dir)), human)


if __name__ == "__main__":
    main()
