"""Ending what a dead process left live: its sessions and its running executions, in one transaction.

Used at start-up (this node's own rows: a restart) and by the reaper of a lost node (another
node's rows). Both close the sessions, end the executions as ``error``/``INTERRUPTED`` with
metrics rebuilt from the stored events, and queue change notices for the other nodes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from server.clock import parse_iso
from server.events import EventTuple
from server.store import notices
from server.store.engine import dumps

INTERRUPTED_EXECUTION = "the server stopped while this execution was running"
INTERRUPTED_SESSION = "garbage collected on daemon startup: runtime state does not survive process restarts"


def _elapsed_ms(start: str, end: str | None) -> float:
    """Milliseconds between two stored timestamps (0 when there is no end or they do not parse)."""
    if end is None:
        return 0.0
    try:
        return max(0.0, round((parse_iso(end) - parse_iso(start)).total_seconds() * 1000, 3))
    except ValueError:
        return 0.0


def end_sessions(
    conn: Connection, *, where: str, params: dict[str, Any], status: str, fields: dict[str, Any]
) -> list[str]:
    """Sessions ``starting``/``ready`` that match ``where`` get ``status`` and ``fields``; their ids."""
    ids = [
        r[0]
        for r in conn.execute(
            text(f"SELECT id FROM sessions WHERE status IN ('starting', 'ready') AND ({where})"), params
        )
    ]
    assigns = ", ".join(f"{k}=:f_{k}" for k in fields)
    for session_id in ids:
        conn.execute(
            text(
                f"UPDATE sessions SET status=:status, {assigns} "
                "WHERE id=:id AND status IN ('starting', 'ready')"
            ),
            {"status": status, "id": session_id, **{f"f_{k}": v for k, v in fields.items()}},
        )
    return ids


def interrupt_executions(
    conn: Connection,
    *,
    where: str,
    params: dict[str, Any],
    now: str,
    message: str,
    event_id: Any = None,
) -> tuple[list[tuple[str, str]], list[EventTuple]]:
    """End running executions whose session matches ``where`` as ``error``/``INTERRUPTED``.

    Ended executions always carry their metrics (API.md §4); what the dead process knew is gone,
    so they are rebuilt from the stored events: the wall time up to the last stored event and the
    event count (CPU time and output size are unknown: null). With ``event_id`` (a callable
    returning a fresh event id) each gets a closing ``system`` event saying why. Returns the
    ``(execution id, session id)`` pairs and the events written.
    """
    running = conn.execute(
        text(
            "SELECT x.id, x.session_id, x.started_at, COUNT(v.id), MAX(v.ts), MAX(v.seq) "
            "FROM executions x LEFT JOIN events v ON v.execution_id = x.id "
            f"WHERE x.status='running' AND x.session_id IN (SELECT id FROM sessions WHERE {where}) "
            "GROUP BY x.id, x.session_id, x.started_at"
        ),
        params,
    ).all()
    error = dumps({"code": "INTERRUPTED", "message": message})
    ended: list[tuple[str, str]] = []
    written: list[EventTuple] = []
    for exec_id, session_id, started_at, n_events, last_ts, last_seq in running:
        count = int(n_events)
        if event_id is not None:
            payload = {"level": "error", "code": "INTERRUPTED", "message": message}
            row = (int(event_id()), exec_id, int(last_seq or 0) + 1, now, "system", dumps(payload))
            conn.execute(
                text(
                    "INSERT INTO events (id, execution_id, seq, ts, type, payload) "
                    "VALUES (:id, :e, :s, :ts, :t, :p)"
                ),
                {"id": row[0], "e": row[1], "s": row[2], "ts": row[3], "t": row[4], "p": row[5]},
            )
            written.append(row)
            count += 1
            last_ts = now
        metrics = {
            "wall_ms": _elapsed_ms(started_at, last_ts),
            "cpu_ms": None,
            "event_count": count,
            "output_bytes": None,
        }
        conn.execute(
            text(
                "UPDATE executions SET status='error', ended_at=:now, error=:err, "
                "metrics=:m WHERE id=:id AND status='running'"
            ),
            {"now": now, "err": error, "m": dumps(metrics), "id": exec_id},
        )
        ended.append((exec_id, session_id))
    return ended, written


def change_entries(
    ended: list[tuple[str, str]], sessions: list[str], events: list[EventTuple] | None = None
) -> list[str]:
    """The notices of a reconciliation: closing events, execution ends, then session changes."""
    entries = notices.events_entries(events) if events else []
    entries += [notices.execution_entry(e, s, "error") for e, s in ended]
    entries += [notices.session_entry(s) for s in sessions]
    return entries
