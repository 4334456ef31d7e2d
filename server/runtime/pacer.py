"""When checkpoints are forked: right after each execution while the server has the time for
it, once a session is idle while it is busy.

A checkpoint costs CPU: the fork, the old checkpoint's exit, and above all the copy-on-write
that follows: every page the worker writes again after the fork is copied first, during its
next execution. Workers report how long their forks took and how many page faults the run
after a checkpoint took; the zygote measures what one such fault costs on this machine. The
pacer keeps the server's recent rate of executions and that cost, and asks workers to defer
their checkpoints when checkpointing every execution would take more than ``BUDGET`` of one
core. Deferred checkpoints are taken once their session has been idle for
``DEFERRED_DELAY_S``; until then a kill rolls back to the checkpoint before the burst, and
says so (docs/performance.md, docs/api.md).
"""

from __future__ import annotations

import time

BUDGET = 0.25  # share of one core that checkpoints after every execution may take
DEFERRED_DELAY_S = 0.05
FORK_FACTOR = 2.0  # fork time -> fork plus the old checkpoint's exit
WINDOW_S = 1.0
SMOOTHING = 0.2  # one slow fork or one large run is not a trend


class CheckpointPacer:
    def __init__(self) -> None:
        self._fork_s = 0.001  # until a checkpoint says otherwise
        self._faults = 0.0  # copy-on-write faults of a run that follows a checkpoint (smoothed)
        self.fault_s = 5e-6  # what one fault costs (the zygote measures it at start)
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
        self._fork_s += (fork_s - self._fork_s) * SMOOTHING

    def note_faults(self, faults: int) -> None:
        """Page faults of a run that started right after a checkpoint (its copy-on-write)."""
        self._faults += (faults - self._faults) * SMOOTHING

    @property
    def cost_s(self) -> float:
        """CPU seconds one checkpoint costs, all told."""
        return self._fork_s * FORK_FACTOR + self._faults * self.fault_s

    def delay(self) -> float:
        """0 to checkpoint right after the run, else how long its session must be idle first."""
        elapsed = max(time.monotonic() - self._window_start, 1e-3)
        rate = max(self._rate if elapsed < WINDOW_S else 0.0, self._runs / max(elapsed, WINDOW_S))
        busy = rate * self.cost_s > BUDGET
        return DEFERRED_DELAY_S if busy else 0.0
