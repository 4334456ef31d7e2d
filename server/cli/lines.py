"""The original's human output: the exact lines and columns its scripts parse (UPSTREAM-CLI.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import click

# --------------------------------------------------------------------------------------------
# Values as the original printed them


def raw(value: Any) -> str:
    """Compact JSON, as the original echoed the server's raw JSON (`"preview":"42"`)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def pretty(value: Any) -> str:
    """2-space indented JSON (catalogs, health, runtime summary)."""
    return json.dumps(value, ensure_ascii=False, indent=2)


def _utc(ts: Any) -> datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def rfc3339(ts: Any) -> str:
    """``2024-05-01T12:34:56Z``: RFC 3339 to the second, as Go's time.RFC3339 prints UTC."""
    parsed = _utc(ts)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ") if parsed else str(ts or "")


def clock(ts: Any) -> str:
    """``12:34:56``, the time of day of an event."""
    parsed = _utc(ts)
    return parsed.strftime("%H:%M:%S") if parsed else str(ts or "")


def cut(text: str, longer_than: int) -> str:
    """The first ``longer_than - 3`` characters and ``...`` when the text is longer."""
    return text if len(text) <= longer_than else text[: longer_than - 3] + "..."


def yes_no(flag: Any) -> str:
    return "yes" if flag else "no"


def _table(
    rows: Iterable[Any], empty: str, header: tuple[str, ...], widths: tuple[int, ...], rule: int
) -> None:
    """``%-Ns`` columns under a dashed rule (the last width 0: not padded), or ``empty``."""
    rows = list(rows)
    if not rows:
        click.echo(empty)
        return

    def line(cells: Iterable[Any]) -> str:
        return " ".join(f"{cell!s:<{width}}" for cell, width in zip(cells, widths, strict=True))

    click.echo(line(header))
    click.echo("-" * rule)
    for row in rows:
        click.echo(line(row))


# --------------------------------------------------------------------------------------------
# Templates


def template_created(template: Mapping[str, Any]) -> None:
    click.echo(f"Created template: {template.get('name')} (ID: {template.get('id')})")


def template_table(templates: list[Mapping[str, Any]]) -> None:
    rows = [(t.get("id"), t.get("name"), t.get("engine"), yes_no(t.get("is_active"))) for t in templates]
    _table(rows, "No templates found", ("ID", "Name", "Engine", "Active"), (36, 20, 10, 10), 84)


def template_detail(detail: Mapping[str, Any]) -> None:
    template = detail.get("template") or {}
    click.echo(f"Template: {template.get('name')}")
    click.echo(f"ID: {template.get('id')}")
    click.echo(f"Engine: {template.get('engine')}")
    click.echo(f"Active: {'true' if template.get('is_active') else 'false'}")
    click.echo(f"Created: {rfc3339(template.get('created_at'))}")
    click.echo(f"Updated: {rfc3339(template.get('updated_at'))}")
    settings = detail.get("settings")
    if isinstance(settings, Mapping):
        click.echo("\nSettings:")
        for key, label in (("limits", "Limits"), ("resolver", "Resolver"), ("runtime", "Runtime")):
            click.echo(f"  {label}: {raw(settings.get(key))}")
    capabilities = detail.get("capabilities") or []
    if capabilities:
        click.echo("\nCapabilities:")
        for cap in capabilities:
            state = "enabled" if cap.get("enabled") else "disabled"
            click.echo(f"  [{state}] {cap.get('kind')}:{cap.get('name')} (config: {raw(cap.get('config'))})")
    startup_files = detail.get("startup_files") or []
    if startup_files:
        click.echo("\nStartup Files:")
        for item in startup_files:
            click.echo(f"  [{item.get('order_index')}] {item.get('path')} (mode: {item.get('mode')})")
    for key, title in (("exposed_modules", "Exposed Modules"), ("libraries", "Loaded Libraries")):
        names = template.get(key) or []
        if names:
            click.echo(f"\n{title}:")
            for name in names:
                click.echo(f"  - {name}")


def capabilities_table(capabilities: list[Mapping[str, Any]]) -> None:
    rows = [
        (c.get("kind"), c.get("name"), yes_no(c.get("enabled")), cut(raw(c.get("config")), 30))
        for c in capabilities
    ]
    _table(rows, "No capabilities found", ("Kind", "Name", "Enabled", "Config"), (10, 20, 10, 30), 80)


def startup_table(files: list[Mapping[str, Any]]) -> None:
    rows = [(f.get("order_index"), f.get("mode"), f.get("path")) for f in files]
    _table(rows, "No startup files found", ("Order", "Mode", "Path"), (5, 10, 50), 70)


def names(items: list[str], empty: str) -> None:
    """One name per line (modules, libraries of a template), or ``empty``."""
    click.echo("\n".join(items) if items else empty)


# --------------------------------------------------------------------------------------------
# Sessions


def _fields(obj: Mapping[str, Any], spec: str, *, optional: str = "") -> None:
    """``Label: value`` lines; ``spec`` and ``optional`` list ``Label=key`` (``Label_Words`` for
    spaces, a ``@`` after the key for RFC 3339 times, ``!`` for raw JSON); optional ones only
    when set."""
    for words, is_optional in [(spec, False), (optional, True)]:
        for item in words.split():
            label, _, key = item.partition("=")
            kind = key[-1] if key[-1] in "@!" else ""
            value = obj.get(key.rstrip("@!"))
            if is_optional and value in (None, ""):
                continue
            text = rfc3339(value) if kind == "@" else raw(value) if kind == "!" else value
            click.echo(f"{label.replace('_', ' ')}: {text}")


def session_created(session: Mapping[str, Any]) -> None:
    click.echo(f"Created session: {session.get('id')}")
    _fields(
        session,
        "Status=status Template_ID=vm_id Workspace_ID=workspace_id Base_Commit=base_commit_oid "
        "Worktree_Path=worktree_path",
    )


def session_forked(session: Mapping[str, Any]) -> None:
    """`session fork`: the lines of `session create`, and where the state came from."""
    click.echo(f"Forked session: {session.get('id')}")
    _fields(
        session,
        "Status=status Template_ID=vm_id Workspace_ID=workspace_id Base_Commit=base_commit_oid "
        "Worktree_Path=worktree_path",
    )
    meta = session.get("runtime_meta")
    origin = meta.get("forked_from") if isinstance(meta, Mapping) else None
    if isinstance(origin, Mapping):
        after = origin.get("execution_id")
        suffix = f" (after execution {after})" if after else ""
        click.echo(f"Forked From: {origin.get('session_id')}{suffix}")


def session_detail(session: Mapping[str, Any]) -> None:
    _fields(
        session,
        "Session_ID=id Template_ID=vm_id Workspace_ID=workspace_id Base_Commit=base_commit_oid "
        "Worktree_Path=worktree_path Status=status Created=created_at@",
        optional="Closed=closed_at@ Last_Error=last_error",
    )


def sessions_table(sessions: list[Mapping[str, Any]]) -> None:
    rows = [(s.get("id"), s.get("vm_id"), s.get("status"), rfc3339(s.get("created_at"))) for s in sessions]
    header = ("Session ID", "Template ID", "Status", "Created")
    _table(rows, "No sessions found", header, (36, 36, 10, 20), 102)


# --------------------------------------------------------------------------------------------
# Executions and events


def execution_result(execution: Mapping[str, Any], *, with_result: bool) -> None:
    """`exec repl` / `exec run-file`: the outcome, then every event with its raw payload.

    A JavaScript exception is printed as an ``Error:`` line on stdout; it is not a CLI failure.
    """
    _fields(
        execution, "Execution_ID=id Status=status", optional="Result=result! " * with_result + "Error=error!"
    )
    events = execution.get("events") or []
    if events:
        click.echo("\nEvents:")
        for event in events:
            click.echo(f"[{event.get('seq')}] {event.get('type')}: {raw(event.get('payload'))}")


def execution_detail(execution: Mapping[str, Any]) -> None:
    _fields(
        execution,
        "Execution_ID=id Session_ID=session_id Kind=kind Status=status Started=started_at@",
        optional="Ended=ended_at@ Input=input Path=path Result=result! Error=error!",
    )


def executions_table(executions: list[Mapping[str, Any]]) -> None:
    rows = [(e.get("id"), e.get("kind"), e.get("status"), rfc3339(e.get("started_at"))) for e in executions]
    header = ("Execution ID", "Kind", "Status", "Started")
    _table(rows, "No executions found", header, (36, 10, 10, 20), 80)


def events_table(events: list[Mapping[str, Any]]) -> None:
    rows = [(e.get("seq"), clock(e.get("ts")), e.get("type"), cut(raw(e.get("payload")), 50)) for e in events]
    _table(rows, "No events found", ("Seq", "Timestamp", "Type", "Payload"), (5, 20, 15, 0), 80)
