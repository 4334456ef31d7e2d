"""Where event ids come from: this process's counter (SQLite, one server) or the database (PostgreSQL).

Ids must be unique across the cluster and increase within each session (API.md §4, §14). On
SQLite the server is alone, so a counter seeded from the largest stored id is enough, and costs
nothing. On PostgreSQL a sequence hands each node blocks of ids (``INCREMENT BY`` the block
size): a node numbers its events from its current block and fetches the next block ahead of
time, in the background, so a commit never waits for an id. A node's blocks only grow (the
sequence does), so its ids, and so every session's, increase. Ids left in a block when a node
stops are never used: ids have gaps, never repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

log = logging.getLogger(__name__)

MAX_ALLOCATION = 512  # ids one allocate() may ask for (a worker's batch is at most this big)


class IdSource(Protocol):
    def allocate(self, n: int) -> int:
        """Reserve ``n`` (at most MAX_ALLOCATION) consecutive event ids; returns the first."""

    async def close(self) -> None:
        """Stop whatever runs in the background (the server is stopping)."""


class CounterIds:
    """One server's counter (SQLite)."""

    def __init__(self, last_id: int) -> None:
        self._next = last_id + 1

    def allocate(self, n: int) -> int:
        base = self._next
        self._next += n
        return base

    async def close(self) -> None:
        return None


class BlockSource(Protocol):
    """The database's sequence (``Store``)."""

    id_block: int

    async def next_id_block(self) -> int: ...

    def next_id_block_now(self) -> int: ...


class BlockIds:
    """Blocks of ids from the database's sequence, the next one fetched ahead (PostgreSQL)."""

    def __init__(self, source: BlockSource) -> None:
        self.source = source
        self.size = source.id_block
        assert self.size >= MAX_ALLOCATION, "the id block must hold one allocation"
        self._next = 0
        self._end = 0  # one past the current block
        self._ahead: int | None = None  # first id of the block fetched ahead
        self._fetching: asyncio.Task[None] | None = None
        self.blocks = 0  # blocks taken, for the metrics
        self.waited = 0  # times an allocation had to fetch a block on the spot

    async def start(self) -> None:
        self._take(await self.source.next_id_block())

    def allocate(self, n: int) -> int:
        if self._next + n > self._end:
            if self._ahead is None or self._ahead < self._end:
                # The block fetched ahead did not arrive in time (or could not be fetched, or
                # arrived after one taken on the spot, and is older): take one now, on this
                # thread. Rare: a block lasts for `size` events.
                self.waited += 1
                self._ahead = self.source.next_id_block_now()
            self._take(self._ahead)
            self._ahead = None
        base = self._next
        self._next += n
        if self._ahead is None and self._fetching is None and self._end - self._next < self.size // 2:
            self._fetching = asyncio.get_running_loop().create_task(self._fetch_ahead())
        return base

    async def close(self) -> None:
        task, self._fetching = self._fetching, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _take(self, first: int) -> None:
        self._next, self._end = first, first + self.size
        self.blocks += 1

    async def _fetch_ahead(self) -> None:
        try:
            self._ahead = await self.source.next_id_block()
        except Exception:  # noqa: BLE001 - allocate() fetches one itself when it must
            log.warning("could not fetch the next block of event ids ahead of time", exc_info=True)
        finally:
            self._fetching = None
