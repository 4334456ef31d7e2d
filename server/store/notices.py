"""Change notices between nodes: what a commit changed, by id (never payloads), for NOTIFY.

After a commit that other nodes' subscribers may care about, PostgreSQL delivers a notice to
every node listening on the channel; they read the rows themselves, by cursor. A notice is text:
the origin node's id, then entries separated by spaces, each a comma-separated record:

- ``e,<execution>,<first seq>,<last seq>,<first id>,<last id>``: events of an execution committed;
- ``x,<execution>,<session or ->,<status>``: an execution started (``running``) or ended;
- ``s,<session>``: a session's row changed (status, runtime facts);
- ``n,<node>,<status>``: a node was declared ``lost``, or ``stopped``.

Ids are UUIDs and node ids have no spaces or commas, so the format needs no escaping. One
commit's notices are split into payloads well under PostgreSQL's 8000-byte limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from server.events import EventTuple, runs_by_execution

MAX_PAYLOAD = 7000  # bytes; PostgreSQL refuses a payload of 8000 or more


@dataclass(frozen=True)
class EventsNotice:
    execution_id: str
    first_seq: int
    last_seq: int
    first_id: int
    last_id: int


@dataclass(frozen=True)
class ExecutionNotice:
    execution_id: str
    session_id: str | None
    status: str


@dataclass(frozen=True)
class SessionNotice:
    session_id: str


@dataclass(frozen=True)
class NodeNotice:
    node_id: str
    status: str


Notice = EventsNotice | ExecutionNotice | SessionNotice | NodeNotice


def events_entries(rows: Sequence[EventTuple]) -> list[str]:
    """One entry per execution run in a committed batch (rows of one execution are in seq order)."""
    out = []
    for exec_id, run in runs_by_execution(rows):
        out.append(f"e,{exec_id},{run[0][2]},{run[-1][2]},{run[0][0]},{run[-1][0]}")
    return out


def execution_entry(execution_id: str, session_id: str | None, status: str) -> str:
    return f"x,{execution_id},{session_id or '-'},{status}"


def session_entry(session_id: str) -> str:
    return f"s,{session_id}"


def node_entry(node_id: str, status: str) -> str:
    return f"n,{node_id},{status}"


def batch_entries(events: Sequence[EventTuple], finalize: Iterable[dict[str, Any]]) -> list[str]:
    """What an event batch with finalizations changed: its events first, then the ends."""
    entries = events_entries(events) if events else []
    entries += [execution_entry(f["id"], f.get("session_id"), f["status"]) for f in finalize]
    return entries


def payloads(origin: str, entries: Sequence[str]) -> list[str]:
    """The entries packed into as few NOTIFY payloads as fit, each starting with ``origin``."""
    out: list[str] = []
    current = origin
    for entry in entries:
        if len(current) + 1 + len(entry) > MAX_PAYLOAD and current != origin:
            out.append(current)
            current = origin
        current += " " + entry
    if current != origin:
        out.append(current)
    return out


def parse(payload: str) -> tuple[str, list[Notice]]:
    """``(origin, notices)``; entries that do not parse are skipped (a newer node's kinds)."""
    origin, _, rest = payload.partition(" ")
    notices: list[Notice] = []
    for entry in rest.split():
        parts = entry.split(",")
        try:
            if parts[0] == "e" and len(parts) == 6:
                notices.append(EventsNotice(parts[1], *(int(p) for p in parts[2:])))
            elif parts[0] == "x" and len(parts) == 4:
                notices.append(ExecutionNotice(parts[1], None if parts[2] == "-" else parts[2], parts[3]))
            elif parts[0] == "s" and len(parts) == 2:
                notices.append(SessionNotice(parts[1]))
            elif parts[0] == "n" and len(parts) == 3:
                notices.append(NodeNotice(parts[1], parts[2]))
        except ValueError:
            continue
    return origin, notices
