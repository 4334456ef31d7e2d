"""The event writer: hands out global event ids, persists rows in batches, publishes after commit.

One writer per server. Rows queued while a batch is being committed form the next batch, so a
quiet server commits each event at once (low latency) and a busy one commits thousands per
transaction (high throughput). Finalizations ride in the same transaction as the events before
them, so an execution is never marked ended before all of its events are stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from server.errors import StoreError
from server.events import EventTuple
from server.pipeline.bus import EventBus
from server.pipeline.ids import IdSource
from server.store.store import Store

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 20_000
HIGH_WATER_ROWS = 100_000  # producers wait above this many queued rows (bounded memory)


class EventWriter:
    allocate: Callable[[int], int]
    """Reserve ``n`` consecutive event ids (n <= ids.MAX_ALLOCATION); returns the first."""

    def __init__(self, store: Store, bus: EventBus, ids: IdSource) -> None:
        self.store = store
        self.bus = bus
        self.ids = ids
        self.allocate = ids.allocate  # the hot path calls the source directly
        self.events_written = 0
        self._rows: list[EventTuple] = []
        self._final: list[dict[str, Any]] = []
        self._published: list[dict[str, Any]] = []
        # (future, execution id of its rows or None): a future whose execution has had a batch
        # fail is failed too, even if its own rows were dropped from a later, successful batch.
        self._waiters: list[tuple[asyncio.Future[None], str | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._poisoned: set[str] = set()

    def submit(
        self,
        rows: Sequence[EventTuple],
        *,
        finalize: dict[str, Any] | None = None,
        publish: dict[str, Any] | None = None,
    ) -> asyncio.Future[None]:
        """Queue rows (and optionally an execution finalization); the future resolves on commit.

        ``publish`` is the execution record to announce on the bus once the batch is committed.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        exec_id = rows[0][1] if rows else None
        if exec_id is not None and exec_id in self._poisoned:
            fut.set_exception(StoreError("store events"))
            return fut
        self._rows.extend(rows)
        if finalize is not None:
            self._final.append(finalize)
        if publish is not None:
            self._published.append(publish)
        self._waiters.append((fut, exec_id))
        if len(self._rows) >= HIGH_WATER_ROWS:
            self._drained.clear()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-writer")
        return fut

    async def wait_capacity(self) -> None:
        """Backpressure for producers: returns when the queue is below the high-water mark."""
        if not self._drained.is_set():
            await self._drained.wait()

    @property
    def busy(self) -> bool:
        """Rows are queued or being committed."""
        return self._task is not None

    def barrier(self) -> asyncio.Future[None]:
        """Resolves once everything queued so far is committed (or failed)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._task is None:
            fut.set_result(None)
        else:
            self._waiters.append((fut, None))
        return fut

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._rows or self._final or self._waiters:
                if len(self._rows) > MAX_BATCH_ROWS:
                    rows = self._rows[:MAX_BATCH_ROWS]
                    self._rows = self._rows[MAX_BATCH_ROWS:]
                    final: list[dict[str, Any]] = []
                    published: list[dict[str, Any]] = []
                    waiters: list[tuple[asyncio.Future[None], str | None]] = []
                else:
                    rows, self._rows = self._rows, []
                    final, self._final = self._final, []
                    published, self._published = self._published, []
                    waiters, self._waiters = self._waiters, []
                if len(self._rows) < HIGH_WATER_ROWS:
                    self._drained.set()
                if self._poisoned:
                    # Rows queued behind a failed batch of the same execution would leave a gap
                    # in its seq numbers: drop them (the execution is ending as an error).
                    rows = [r for r in rows if r[1] not in self._poisoned]
                try:
                    if rows or final:
                        await self.store.write_batch(events=rows, finalize=final)
                except Exception as exc:  # noqa: BLE001 - reported to every waiter
                    self._poisoned.update(r[1] for r in rows)
                    for w, _ in waiters:
                        if not w.done():
                            w.set_exception(exc)
                    continue
                self.events_written += len(rows)
                self.bus.publish_events(rows)
                for record in published:
                    self.bus.publish_execution(record)
                for w, exec_id in waiters:
                    if w.done():
                        continue
                    if exec_id is not None and exec_id in self._poisoned:
                        w.set_exception(StoreError("store events"))
                    else:
                        w.set_result(None)
        finally:
            self._task = None
            self._drained.set()

    def forget(self, execution_id: str) -> None:
        """The execution has ended: stop tracking it as failed."""
        self._poisoned.discard(execution_id)
