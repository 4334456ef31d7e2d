"""Keeping SQLite's write-ahead log small: the data grows, the log must not.

Every commit appends the pages it changed to the WAL; a checkpoint copies them into the
database file, and only a checkpoint that catches up with the writer lets the log start over.
Under a steady stream of small commits a checkpoint running beside the writer rarely catches up,
and the file never shrinks by itself: a burst of executions once left a 1.3 GB log behind 47 MB
of data (bench/wal.py). So, once a second:

- while events stream (a bulk write within ``QUIET_S``) and the log is under ``CAP_BYTES``,
  nothing: a checkpoint would compete with the writer for the CPU;
- otherwise, while writes come, a PASSIVE checkpoint on a reader connection copies what it can
  beside the writer;
- once writes have paused for ``QUIET_S``, or the log has reached ``CAP_BYTES`` whatever the
  load, a TRUNCATE checkpoint on the writer thread, between two commits: it completes, and the
  file goes back to zero bytes. At the cap that costs the writes queued behind it one pause.

``journal_size_limit`` (``store.WAL_SIZE_LIMIT``) also trims the file whenever the log starts
over after a checkpoint. PostgreSQL has none of this to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from server.store.store import Store

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
QUIET_S = 0.5  # no write for this long: writes have paused
CAP_BYTES = 64 * 1024 * 1024  # truncate at this size even while writes go on


async def keep_small(store: Store) -> None:
    """The WAL keeper's loop (a task for the server's lifetime; SQLite only)."""
    if not store.is_sqlite:
        return
    while True:
        await asyncio.sleep(CHECK_EVERY_S)
        with contextlib.suppress(Exception):
            await step(store)


async def step(store: Store) -> str:
    """One look at the log; returns what was done (for tests and logs)."""
    size = store.wal_bytes()
    if size == 0:
        return "nothing"
    now = time.monotonic()
    paused = now - store.last_write >= QUIET_S
    if paused or size >= CAP_BYTES:
        truncated = await store.truncate_wal()
        if size >= CAP_BYTES:
            log.info("write-ahead log at %d MB: truncated=%s", size >> 20, truncated)
        return "truncated" if truncated else "busy"
    if now - store.last_bulk_write < QUIET_S:
        return "streaming"
    await store.checkpoint()
    return "passive"
