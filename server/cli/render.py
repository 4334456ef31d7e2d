"""Human-readable output: JSON or tables and key/value blocks, executions and events in colour."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from server.cli.state import CliState

# Columns (`key[=HEADER]` words, see `_lookup`) and block keys for each kind of resource.
TEMPLATES = "id name engine exposed_modules=modules libraries created_at"
TEMPLATE_KEYS = "id name engine is_active exposed_modules libraries created_at updated_at"
CAPABILITIES = "id kind name enabled config"
STARTUP_FILES = "id order_index=order mode path"
SESSIONS = "id status vm_id=template workspace_id=workspace created_at"
SESSION_KEYS = "id status vm_id workspace_id base_commit_oid worktree_path created_at closed_at"
SESSION_KEYS += " last_error runtime_meta"
EXECUTIONS = "id kind status started_at metrics.wall_ms=wall_ms input|path=input"
LIBRARIES = "name global cached description"

# --------------------------------------------------------------------------------------------
# JSON, tables and blocks


def use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def echo_json(data: Any, *, compact: bool = False) -> None:
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


def table(rows: Iterable[Mapping[str, Any]], spec: str) -> None:
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


def block(obj: Mapping[str, Any], keys: str | None = None) -> None:
    """Print `key: value` lines, for `keys` (space-separated) or every key."""
    shown = [k for k in (keys.split() if keys else obj.keys()) if k in obj]
    width = max((len(k) for k in shown), default=0) + 1
    for key in shown:
        click.echo(f"{(key + ':').ljust(width)} {_cell(obj[key], width=10_000)}")


def echo_names(names: list[str]) -> None:
    click.echo("\n".join(names) if names else "(none)")


def output(state: CliState, data: Any, human: Callable[[Any], None]) -> None:
    if state.json:
        echo_json(data)
    else:
        human(data)


def as_table(spec: str) -> Callable[[Any], None]:
    return lambda rows: table(rows, spec)


def as_block(keys: str | None = None) -> Callable[[Any], None]:
    return lambda obj: block(obj, keys)


def print_template_detail(detail: Mapping[str, Any]) -> None:
    block(detail.get("template") or {}, TEMPLATE_KEYS)
    settings = detail.get("settings") or {}
    for section in ("limits", "resolver", "runtime"):
        values = settings.get(section)
        if isinstance(values, Mapping):
            text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in values.items())
            click.echo(f"{section + ':':16} {text or '-'}")
    click.echo("\ncapabilities:")
    table(detail.get("capabilities") or [], CAPABILITIES)
    click.echo("\nstartup files:")
    table(detail.get("startup_files") or [], STARTUP_FILES)


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
            level, text = str(payload.get("level", "log")), str(payload.get("text", ""))
            if level == "log" and self.interactive:
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


def print_execution_result(state: CliState, execution: Mapping[str, Any]) -> None:
    """Output of a REST execution that waited: its events, then the status line."""
    if state.json:
        echo_json(execution)
        return
    printer = ExecutionPrinter(color=use_color())
    for event in execution.get("events") or []:
        printer.event(event)
    printer.final(execution)


def print_execution_block(execution: Mapping[str, Any]) -> None:
    block(execution, "id session_id kind status input path args env started_at ended_at metrics")
    result, error = execution.get("result"), execution.get("error")
    if isinstance(result, Mapping):
        click.echo(f"{'result:':11} {result.get('preview')} ({result.get('type')})")
    if isinstance(error, Mapping):
        label = error.get("code") or error.get("name") or "error"
        click.echo(f"{'error:':11} {label}: {error.get('message', '')}")


def event_detail(event: Mapping[str, Any]) -> str:
    """One event as a table cell, for `exec events`."""
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
