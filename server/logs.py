"""The server's logging: records to stderr at once, the per-request access lines in batches.

An access line per request is the default (INFO), and writing each one as it happens costs a
``write`` system call per request, a measurable share of a small server's throughput
(docs/performance.md). Access lines are therefore buffered the way nginx buffers its access
log: written when ``CAPACITY`` lines have gathered, when ``FLUSH_S`` has passed since the
oldest one, or at once when a warning or an error is logged. Everything else is written
unbuffered.
"""

from __future__ import annotations

import logging
import logging.handlers
import threading
import time

ACCESS_LOGGER = "vm_system.access"
CAPACITY = 256
FLUSH_S = 0.5


class BatchedHandler(logging.handlers.MemoryHandler):
    """A ``MemoryHandler`` that also flushes on age, from a timer thread while idle."""

    def __init__(
        self, target: logging.Handler, *, capacity: int = CAPACITY, flush_s: float = FLUSH_S
    ) -> None:
        super().__init__(capacity, flushLevel=logging.WARNING, target=target, flushOnClose=True)
        self.flush_s = flush_s
        self._oldest = 0.0
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._flush_idle, name="access-log", daemon=True)
        self._timer.start()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.buffer:
            self._oldest = time.monotonic()
        super().emit(record)

    def shouldFlush(self, record: logging.LogRecord) -> bool:  # noqa: N802 - logging's name
        return super().shouldFlush(record) or time.monotonic() - self._oldest >= self.flush_s

    def _flush_idle(self) -> None:
        while not self._stop.wait(self.flush_s):
            if self.buffer and time.monotonic() - self._oldest >= self.flush_s:
                self.flush()

    def close(self) -> None:
        self._stop.set()
        super().close()


def configure(level: str, *, timestamps: bool = True) -> None:
    """Log to stderr at ``level``; access lines batched (``BatchedHandler``)."""
    fmt = (
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
        if timestamps
        else "%(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(level=level.upper(), format=fmt)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    root_handlers = logging.getLogger().handlers
    access = logging.getLogger(ACCESS_LOGGER)
    if root_handlers and not any(isinstance(h, BatchedHandler) for h in access.handlers):
        access.addHandler(BatchedHandler(root_handlers[0]))
        access.propagate = False
