"""Worker-side accounting of one stream of JavaScript work: limits, output budget, CPU time.

A worker has two streams: the foreground run (one execution) and the session's background
timers. Each is a ``Stream``; the worker switches between them as it runs callbacks, so each
stream is charged only for its own CPU time and output, and the watchdog thread checks the
limits of whichever stream is in JavaScript right now.
"""

from __future__ import annotations

import time
from typing import Any

from server.runtime.protocol import BACKGROUND, FOREGROUND

UNLIMITED = -1


class Stream:
    """Limits and counters of the foreground run or of the background timers."""

    def __init__(self, key: str, exec_id: str, limits: dict[str, Any], *, reserved_events: int) -> None:
        self.key = key
        self.exec_id = exec_id
        self.cpu_s = (limits.get("cpu_ms") or 0) / 1000
        wall_s = (limits.get("wall_ms") or 0) / 1000 if key == FOREGROUND else 0
        max_events = limits.get("max_events") or 0
        # Events the pipeline stores around the console output (input echo, closing event).
        self.event_budget = max(0, max_events - reserved_events) if max_events else UNLIMITED
        self.byte_budget = (limits.get("max_output_kb") or 0) * 1024 or UNLIMITED
        self.events = 0
        self.bytes = 0
        self.deadline = time.monotonic() + wall_s if wall_s else None
        self.cancelled = False
        self.cancel_at = 0.0
        self.stop_code: str | None = None  # OUTPUT_LIMIT_EXCEEDED once the limit is hit
        self.stop_at = 0.0
        self.in_js = False
        self.reported_stuck = False
        self.cpu_spent = 0.0
        self.cpu_mark = 0.0
        self.box_cpu = 0.0  # CPU of `exec` boxes, counted by their helper process

    @classmethod
    def foreground(cls, exec_id: str, kind: str, limits: dict[str, Any]) -> Stream:
        return cls(FOREGROUND, exec_id, limits, reserved_events=(1 if kind == "repl" else 0) + 1)

    @classmethod
    def background(cls, limits: dict[str, Any]) -> Stream:
        return cls(BACKGROUND, BACKGROUND, limits, reserved_events=1)

    # -- CPU: charged only while this stream's JavaScript runs ---------------------------

    def enter(self) -> None:
        self.cpu_mark = time.process_time()
        self.in_js = True

    def leave(self) -> None:
        if self.in_js:
            self.cpu_spent += time.process_time() - self.cpu_mark
            self.in_js = False

    def cpu_used(self) -> float:
        running = time.process_time() - self.cpu_mark if self.in_js else 0.0
        return self.cpu_spent + running + self.box_cpu

    def new_callback(self) -> None:
        """A background callback starts: its CPU limit counts from here."""
        self.cpu_spent = 0.0
        self.box_cpu = 0.0
        self.reported_stuck = False

    # -- output ----------------------------------------------------------------------------

    def remaining(self) -> int:
        """Output bytes still allowed (UNLIMITED when there is no limit)."""
        if self.byte_budget == UNLIMITED:
            return UNLIMITED
        return max(0, self.byte_budget - self.bytes)

    def admit(self, size: int) -> str | None:
        """Count one event of ``size`` bytes; a message when it would pass a limit."""
        if self.cancelled:
            return "execution cancelled"
        if self.stop_code:
            return "output limit exceeded"
        if self.event_budget != UNLIMITED and self.events >= self.event_budget:
            return self._stop("max_events")
        if self.byte_budget != UNLIMITED and self.bytes + size > self.byte_budget:
            return self._stop("max_output_kb")
        self.events += 1
        self.bytes += size
        return None

    def _stop(self, which: str) -> str:
        self.stop_code = "OUTPUT_LIMIT_EXCEEDED"
        self.stop_at = time.monotonic()
        return f"output limit exceeded ({which})"

    # -- limits ----------------------------------------------------------------------------

    def limit_code(self) -> str | None:
        """The limit this stream has passed, if any (checked by both threads)."""
        if self.cancelled:
            return "CANCELLED"
        if self.stop_code:
            return self.stop_code
        if self.cpu_s and self.cpu_used() >= self.cpu_s:
            return "CPU_LIMIT_EXCEEDED"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "WALL_LIMIT_EXCEEDED"
        return None
