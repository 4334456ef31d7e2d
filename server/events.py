"""The event vocabulary every layer shares: the row shape, its public JSON form, run grouping.

An event row is a plain tuple ``(id, execution_id, seq, ts, type, payload_json)``: it goes
straight into ``executemany`` and comes straight back from a read, with no conversion on the
hot path. The worker produces the three fields it knows, ``(ts, type, payload_json)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson

EventTuple = tuple[int, str, int, str, str, str]
"""(id, execution_id, seq, ts, type, payload_json): one event row, as stored and as read."""

EventBatch = list[tuple[str, str, str]]
"""(ts, type, payload_json): events as a worker sends them, before ids and seqs exist."""


def event_json(row: EventTuple) -> dict[str, Any]:
    """Public form of an event row (payload embedded without re-encoding)."""
    eid, exec_id, seq, ts, typ, payload = row
    return {
        "id": eid,
        "execution_id": exec_id,
        "seq": seq,
        "ts": ts,
        "type": typ,
        "payload": orjson.Fragment(payload),
    }


def events_array(rows: Sequence[EventTuple]) -> orjson.Fragment:
    """A JSON array of events, written directly as text: the hot path of every event reader.

    Every field is safe to embed unescaped: ids and seqs are integers, execution ids are
    UUIDs, timestamps and types are fixed ASCII, and the payload is stored JSON.
    """
    if not rows:
        return orjson.Fragment(b"[]")
    parts = [
        f'{{"id":{r[0]},"execution_id":"{r[1]}","seq":{r[2]},"ts":"{r[3]}","type":"{r[4]}","payload":{r[5]}}}'
        for r in rows
    ]
    return orjson.Fragment("[" + ",".join(parts) + "]")


def runs_by_execution(rows: Sequence[EventTuple]) -> Iterator[tuple[str, Sequence[EventTuple]]]:
    """Split rows into consecutive runs of one execution each, order kept."""
    n = len(rows)
    start = 0
    while start < n:
        exec_id = rows[start][1]
        end = start + 1
        while end < n and rows[end][1] == exec_id:
            end += 1
        yield exec_id, (rows[start:end] if (start or end != n) else rows)
        start = end
