"""The one finalizer: an execution's terminal event, its final record, and what a failure costs.

Every execution (foreground or background) ends here. The closing event is built from how the
run ended, the final record is committed in the same batch as the last events, and when the
store fails the record is rewritten minimally and retried in the background until it lands, so
an execution never stays ``running`` (restart reconciliation is the last backstop).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from server.clock import now_iso
from server.pipeline.bus import EventBus
from server.pipeline.recorder import Recorder
from server.pipeline.writer import EventWriter
from server.store.store import INTERRUPTED_EXECUTION, Store

log = logging.getLogger(__name__)

FINALIZE_RETRY_S = 0.5
FINAL_FIELDS = ("id", "session_id", "status", "ended_at", "result", "error", "metrics")

_LIMIT_TEXT = {
    "CPU_LIMIT_EXCEEDED": ("timeout", "CPU time limit of {cpu_ms} ms exceeded"),
    "WALL_LIMIT_EXCEEDED": ("timeout", "wall-clock limit of {wall_ms} ms exceeded"),
    "OUTPUT_LIMIT_EXCEEDED": (
        "error",
        "output limit exceeded (max_events {max_events}, max_output_kb {max_output_kb}); "
        "the execution was stopped",
    ),
    "CANCELLED": ("cancelled", "execution cancelled"),
    "WORKER_CRASHED": ("error", "the session worker process died during the execution"),
    "BACKGROUND_KILLED": (
        "error",
        "a background timer callback spun past its CPU limit of {cpu_ms} ms and was stopped",
    ),
    "INTERRUPTED": ("error", INTERRUPTED_EXECUTION),
}
# What the session's state became after a kill, said in the closing event (API.md §11).
RECOVERY_NOTE = {
    "rolled_back": "; the session's state was rolled back to before this execution",
    "reset": "; the session's runtime was reset from its template and its state was lost",
    "crashed": "; the session could not be rebuilt and is now crashed",
}


@dataclass(frozen=True)
class Recovery:
    """What became of a session's state after its worker was killed (API.md §11)."""

    state: str  # "rolled_back", "reset" or "crashed"
    # Executions that finished after the checkpoint the state was rolled back to: their
    # changes are gone too (checkpoints deferred while the server was busy; 0 normally).
    lost: int = 0


@dataclass
class Ending:
    """How an execution ends: its status, result or error, and its closing event."""

    status: str
    result: Any = None
    error: Any = None
    terminal: tuple[str, dict[str, Any]] | None = None

    @classmethod
    def from_code(cls, code: str, limits: dict[str, Any], *, recovery: Recovery | None = None) -> Ending:
        """The ending of a run stopped by a limit, a cancel, a crash or a shutdown."""
        status, text = _LIMIT_TEXT.get(code, _LIMIT_TEXT["WORKER_CRASHED"])
        message = text.format(
            **{k: limits.get(k, 0) for k in ("cpu_ms", "wall_ms", "max_events", "max_output_kb")}
        )
        public = "WORKER_CRASHED" if code == "BACKGROUND_KILLED" else code
        payload: dict[str, Any] = {"level": "warn" if status == "cancelled" else "error", "code": public}
        if recovery is not None:
            message += RECOVERY_NOTE[recovery.state]
            payload["state"] = recovery.state
            if recovery.lost:
                message += (
                    f" (its checkpoint was taken {recovery.lost} execution(s) earlier, while the "
                    "server was busy: their changes are gone too)"
                )
                payload["lost_executions"] = recovery.lost
        payload["message"] = message
        return cls(status, None, {"code": public, "message": message}, ("system", payload))

    @classmethod
    def from_outcome(cls, outcome: tuple[str, dict[str, Any]]) -> Ending:
        kind, payload = outcome
        if kind == "value":
            return cls("ok", payload, None, ("value", payload))
        return cls("error", None, payload, ("exception", payload))


class Finalizer:
    def __init__(self, store: Store, writer: EventWriter, bus: EventBus) -> None:
        self.store = store
        self.writer = writer
        self.bus = bus
        self._unfinalized: dict[str, dict[str, Any]] = {}
        self.ended: Counter[str] = Counter()  # executions ended, by status (metrics)
        self._retry_task: asyncio.Task[None] | None = None

    async def finish(
        self, record: dict[str, Any], rec: Recorder, ending: Ending, metrics: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """Add the closing event and store the final record; returns it and the failed
        operation, if any."""
        if ending.terminal is not None and not rec.failed:
            try:
                rec.add(*ending.terminal)
            except Exception:  # noqa: BLE001 - whatever the payload holds, the execution ends
                log.exception("execution %s: its closing event could not be recorded", record["id"])
                message = "the execution's result could not be recorded"
                ending = Ending("error", None, {"code": "INTERNAL", "message": message})
                rec.add("system", {"level": "error", "message": message, "code": "INTERNAL"})
        if rec.failed:
            ending = Ending(
                "error", None, {"code": "INTERNAL", "message": "store failure: could not store events"}
            )
        final = {
            **record,
            "status": ending.status,
            "ended_at": now_iso(),
            "result": ending.result,
            "error": ending.error,
            "metrics": {**metrics, "event_count": rec.seq},
        }
        failed_op = await self._commit(final, rec)
        self.ended[final["status"]] += 1
        return final, failed_op

    async def _commit(self, final: dict[str, Any], rec: Recorder) -> str | None:
        fin = {k: final[k] for k in FINAL_FIELDS}
        failed_op = "store events" if rec.failed else None
        try:
            await self.writer.submit([], finalize=fin, publish=final)
            return failed_op
        except Exception:  # noqa: BLE001 - retried below with a minimal record
            log.exception("finalize of execution %s failed; retrying", final["id"])
        final.update(
            status="error",
            result=None,
            error={"code": "INTERNAL", "message": "store failure: could not finalize execution"},
        )
        if not await self.write_final(final):
            # Keep trying in the background so the row does not stay "running" once the store
            # recovers; shutdown makes a last attempt.
            self._unfinalized[final["id"]] = final
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = asyncio.create_task(self._retry(), name="finalize-retry")
        return failed_op or "finalize execution"

    async def write_final(self, final: dict[str, Any]) -> bool:
        """Store a final record directly and announce it; False if the store failed."""
        try:
            await self.store.write_batch(events=(), finalize=[{k: final[k] for k in FINAL_FIELDS}])
        except Exception:  # noqa: BLE001 - the caller decides whether to retry
            log.exception("execution %s could not be finalized", final["id"])
            return False
        self.bus.publish_execution(final)
        return True

    async def _retry(self) -> None:
        delay = FINALIZE_RETRY_S
        while self._unfinalized:
            await asyncio.sleep(delay)
            for exec_id, final in list(self._unfinalized.items()):
                if await self.write_final(final):
                    self._unfinalized.pop(exec_id, None)
            delay = min(delay * 2, 30.0)

    async def last_attempt(self) -> None:
        """At shutdown: one more try for every record still waiting."""
        if self._retry_task is not None:
            self._retry_task.cancel()
        for exec_id, final in list(self._unfinalized.items()):
            if await self.write_final(final):
                self._unfinalized.pop(exec_id, None)
