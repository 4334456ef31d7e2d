"""This project's own output: JSON, and executions streamed live in colour (`--follow`, `repl`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click

from server.cli.resolve import BY_ARGUMENT
from server.cli.state import CliState, call

# --------------------------------------------------------------------------------------------
# JSON output


def use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def echo_json(data: Any, *, compact: bool = False) -> None:
    if compact:
        click.echo(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    else:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def output(state: CliState, data: Any, human: Callable[[Any], None]) -> None:
    """``--json``: the response as it came; otherwise the command's human output."""
    if state.json:
        echo_json(data)
    else:
        human(data)


ID_ONLY = click.option(
    "-q",
    "--id-only",
    "id_only",
    is_flag=True,
    help="Print only the id (one per line for a list), for scripts: ID=$(vm-system ... -q).",
)


def ids_of(data: Any) -> None:
    """``-q``: the id of the answer, or of each item of a list."""
    for item in data if isinstance(data, list) else [data]:
        click.echo(item.get("id") if isinstance(item, dict) else item)


def api_command(
    group: click.Group,
    name: str,
    method: str,
    human: Callable[[Any], None] | str,
    help_: str,
    *,
    arg: str | None = None,
    id_only: bool = False,
) -> None:
    """Add ``group name [ARG]``: call ``VmClient.<method>([ARG])`` and print the answer.

    An id argument may be a unique prefix (or a template's name): see resolve.py.
    ``human`` prints the answer, or is a line where ``{arg}`` is the argument (the original
    echoes the id the user typed, e.g. ``Deleted template: {arg}``; a prefix shows resolved).
    ``id_only`` adds ``-q``.
    """

    def callback(**values: Any) -> None:
        state = click.get_current_context().find_object(CliState)
        assert state is not None
        given = values.get(arg) if arg else None
        resolved: dict[str, Any] = {}

        async def go(c: Any) -> Any:
            args = []
            if arg:
                resolve = BY_ARGUMENT.get(arg)
                resolved["id"] = await resolve(c, given) if resolve and given is not None else given
                args.append(resolved["id"])
            return await getattr(c, method)(*args)

        data = call(state, go)
        if values.get("id_only"):
            output(state, data, ids_of)
        elif isinstance(human, str):
            output(state, data, lambda _: click.echo(human.format(arg=resolved.get("id"))))
        else:
            output(state, data, human)

    params: list[click.Parameter] = [click.Argument([arg], metavar=arg.upper())] if arg else []
    command = click.Command(name, callback=callback, params=params, help=help_)
    group.add_command(ID_ONLY(command) if id_only else command)


# --------------------------------------------------------------------------------------------
# Executions and events

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
        self.tty = sys.stdout.isatty()
        self.saw_terminal = False

    def _echo(self, text: str, **style: Any) -> None:
        click.echo(click.style(text, **style) if style else text, color=self.color)

    def event(self, event: Mapping[str, Any]) -> None:
        if self.json_lines:
            echo_json(event, compact=True)
            return
        payload = event.get("payload") or {}
        kind = event.get("type")
        if kind == "console":
            # As Node prints them: log lines as they are (a console.table as its box table),
            # other levels marked; the same in `repl` and `exec --follow`.
            level, text = str(payload.get("level", "log")), str(payload.get("text", ""))
            if level == "clear":
                if self.tty:  # a terminal: clear it, as Node's console.clear() does
                    click.echo("\x1b[H\x1b[2J", nl=False)
            elif level == "log":
                self._echo(text)
            else:
                self._echo(f"[{level}] {text}", **_LEVEL_STYLE.get(level, {}))
        elif kind == "value":
            self.saw_terminal = True
            vtype, preview = str(payload.get("type", "")), str(payload.get("preview", ""))
            if vtype == "string":
                preview = _quote_js(preview)  # tell "42" from 42, as the REPL and the browser do
            self._echo(f"=> {preview}", **_VALUE_STYLE.get(vtype, {}))
        elif kind == "exception":
            self.saw_terminal = True
            message = str(payload.get("message") or payload.get("name") or "exception")
            # A thrown non-error already reads "Uncaught 42"; errors read "TypeError: ...".
            prefix = "" if message.startswith("Uncaught ") else "Uncaught "
            self._echo(f"{prefix}{message}", fg="red", bold=True)
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
            echo_json(execution, compact=True)
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
