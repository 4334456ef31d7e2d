"""The worker's outbound side of its main channel: framed messages, and event batching.

Console lines and other events are buffered and sent as ``Events`` batches: the first line
after a quiet spell goes out at once (the first output reaches the user without delay), lines
in a burst are batched (up to ``FLUSH_EVENTS``, or once the oldest has waited
``FLUSH_AFTER_S``; the worker's watchdog thread flushes what waits longer while JavaScript runs,
and the worker flushes everything when the code starts waiting). One batch holds one
stream's events (foreground or background). Both of the worker's threads send, under one lock.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from server.runtime import protocol
from server.runtime.protocol import FOREGROUND

FLUSH_EVENTS = 512  # flush at this many buffered events...
FLUSH_AFTER_S = 0.001  # ...or when the oldest buffered event is this old

Event = tuple[str, str, str]  # (ts, type, payload JSON)


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.buf: list[Event] = []
        self.buf_key = FOREGROUND
        self.buf_since = 0.0
        self.last_flush = 0.0

    def send(self, msg: Any) -> None:
        data = protocol.encode(msg)
        with self.lock:
            self.sock.sendall(data)

    def flush(self) -> None:
        with self.lock:
            self.flush_locked()

    def flush_locked(self) -> None:
        """Send the buffered events (the caller holds ``lock``)."""
        if not self.buf:
            return
        batch, self.buf = self.buf, []
        self.last_flush = time.monotonic()
        self.sock.sendall(protocol.encode(protocol.Events(self.buf_key, batch)))

    def flush_aged(self) -> None:
        """Flush events that have waited past ``FLUSH_AFTER_S`` (the watchdog calls this)."""
        if self.buf and time.monotonic() - self.buf_since >= FLUSH_AFTER_S:
            self.flush()

    def add(self, key: str, event: Event) -> None:
        # The watchdog thread may swap the buffer out to flush it: append under the same lock.
        with self.lock:
            if self.buf and self.buf_key != key:
                self.flush_locked()  # one batch holds one stream's events
            self.buf_key = key
            buf = self.buf
            buf.append(event)
            n = len(buf)
            if n == 1:
                now = time.monotonic()
                self.buf_since = now
                due = now - self.last_flush >= FLUSH_AFTER_S  # first line after a quiet spell
            else:  # in a burst, batch: at FLUSH_EVENTS lines, or when the batch has aged
                due = n >= FLUSH_EVENTS or (
                    n & 31 == 0 and time.monotonic() - self.buf_since >= FLUSH_AFTER_S
                )
            if due:
                self.flush_locked()
