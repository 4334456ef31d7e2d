"""An execution's record and the sequencing of its events: seq numbers, global ids, hand-off
to the writer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from server.clock import now_iso
from server.errors import StoreError
from server.events import EventBatch, EventTuple
from server.pipeline.ids import MAX_ALLOCATION
from server.pipeline.writer import EventWriter


def new_execution(
    session_id: str,
    kind: str,
    *,
    input: str | None = None,
    path: str | None = None,
    args: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of an execution that starts now (API.md §4), status ``running``."""
    return {
        "id": str(uuid.uuid4()),
        "session_id": session_id,
        "kind": kind,
        "input": input,
        "path": path,
        "args": args if args is not None else {},
        "env": env if env is not None else {},
        "status": "running",
        "started_at": now_iso(),
        "ended_at": None,
        "result": None,
        "error": None,
        "metrics": {},
    }


class Recorder:
    """Sequences the events of one execution and hands them to the writer.

    A recorder created ``held`` keeps what it is given until ``release()``: the background
    execution's first events can arrive before its row is committed, and an event row must
    never be written before its execution row.
    """

    def __init__(
        self,
        writer: EventWriter,
        execution_id: str,
        *,
        keep: bool,
        on_failure: Callable[[], None],
        held: bool = False,
    ) -> None:
        self.writer = writer
        self.execution_id = execution_id
        self.seq = 0
        self.kept: list[EventTuple] | None = [] if keep else None
        self.failed = False
        self._on_failure = on_failure
        self._held: list[EventBatch] | None = [] if held else None

    def on_batch(self, batch: EventBatch) -> None:
        if self.failed or not batch:
            return
        if self._held is not None:
            self._held.append(batch)
            return
        n = len(batch)
        if n > MAX_ALLOCATION:  # ids come in runs of at most this many
            for i in range(0, n, MAX_ALLOCATION):
                self.on_batch(batch[i : i + MAX_ALLOCATION])
            return
        try:
            base = self.writer.allocate(n)
        except StoreError:  # no id to be had (PostgreSQL unreachable): as a failed write
            self._fail()
            return
        seq0 = self.seq + 1
        self.seq += n
        eid = self.execution_id
        rows = [(base + i, eid, seq0 + i, ts, typ, payload) for i, (ts, typ, payload) in enumerate(batch)]
        self._submit(rows)

    def release(self) -> None:
        """The execution row is committed: write what was held, and everything from now on."""
        held, self._held = self._held or [], None
        for batch in held:
            self.on_batch(batch)

    def already_stored(self, rows: list[EventTuple]) -> None:
        """Count events committed before the run (the input echo, stored with the row)."""
        self.seq += len(rows)
        if self.kept is not None:
            self.kept.extend(rows)

    def add(self, typ: str, payload: dict[str, Any]) -> None:
        self.on_batch([(now_iso(), typ, orjson.dumps(payload).decode())])

    def _submit(self, rows: list[EventTuple]) -> None:
        fut = self.writer.submit(rows)
        fut.add_done_callback(self._check)
        if self.kept is not None:
            self.kept.extend(rows)

    def _check(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self._fail()

    def _fail(self) -> None:
        if not self.failed:
            self.failed = True
            self._on_failure()
