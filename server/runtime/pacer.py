"""When checkpoints are forked: right after each execution while the server has the time for
it, once a session is idle while it is busy.

A checkpoint costs CPU (the fork, the copy-on-write that follows, the old checkpoint's exit):
a few milliseconds on a small VM. The pacer keeps the server's recent rate of executions and
what forks cost, and asks workers to defer their checkpoints when checkpointing every
execution would take more than ``BUDGET`` of one core. Deferred checkpoints are taken once
their session has been idle for ``DEFERRED_DELAY_S``; until then a kill rolls back to the
checkpoint before the burst, and says so (docs/performance.md, docs/api.md).
"""

from __future__ import annotations

import time

BUDGET = 0.25  # share of one core that checkpoints after every execution may take
DEFERRED_DELAY_S = 0.05
COST_FACTOR = 3.0  # fork time -> CPU of a whole checkpoint (fork, copy-on-write, exit)
WINDOW_S = 1.0


class CheckpointPacer:
    def __init__(self) -> None:
        self._fork_s = 0.001  # until a checkpoint says otherwise
        self._window_start = time.monotonic()
        self._runs = 0
        self._rate = 0.0  # executions per second over the last complete window

    def note_run(self) -> None:
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed >= WINDOW_S:
            self._rate = self._runs / elapsed
            self._runs = 0
            self._window_start = now
        self._runs += 1

    def note_checkpoint(self, fork_s: float) -> None:
        self._fork_s += (fork_s - self._fork_s) * 0.2  # smoothed: one slow fork is not a trend

    def delay(self) -> float:
        """0 to checkpoint right after the run, else how long its session must be idle first."""
        elapsed = max(time.monotonic() - self._window_start, 1e-3)
        rate = max(self._rate if elapsed < WINDOW_S else 0.0, self._runs / max(elapsed, WINDOW_S))
        busy = rate * self._fork_s * COST_FACTOR > BUDGET
        return DEFERRED_DELAY_S if busy else 0.0
