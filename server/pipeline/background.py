"""The session's background execution (API.md §12): where timers left running by REPL input
keep writing their output.

It is created when a run ends with timers still pending (in ``"timers": "background"`` mode),
stays ``running`` while any is left, ends ``ok`` when none is, ``cancelled`` through the cancel
endpoint, and with a limit's status when a callback is stopped. It never holds the session's
lock: executions run between its callbacks. Its events are stored and published like any
execution's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from server.events import EventBatch
from server.pipeline.bus import EventBus
from server.pipeline.finalizer import Ending, Finalizer, Recovery
from server.pipeline.recorder import Recorder, new_execution
from server.pipeline.writer import EventWriter
from server.store.store import Store

log = logging.getLogger(__name__)

NO_TIMERS_LEFT = "no background timers are left"


class BackgroundExecution:
    def __init__(
        self,
        *,
        session_id: str,
        limits: dict[str, Any],
        store: Store,
        writer: EventWriter,
        bus: EventBus,
        finalizer: Finalizer,
    ) -> None:
        self.store = store
        self.bus = bus
        self.finalizer = finalizer
        self.limits = dict(limits)
        self.record = new_execution(session_id, "background")
        self.id: str = self.record["id"]
        self.rec = Recorder(writer, self.id, keep=False, on_failure=lambda: None, held=True)
        self.ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._started = time.monotonic()
        self._opened = asyncio.get_running_loop().create_task(self._open(), name=f"background-{self.id}")
        self._ending = False

    async def _open(self) -> bool:
        try:
            await self.store.create_execution(row=self.record)
        except Exception:  # noqa: BLE001 - its timers keep running; their output is lost
            log.exception("background execution %s could not be stored", self.id)
            return False
        self.bus.publish_execution(dict(self.record))
        self.rec.release()
        return True

    def on_events(self, batch: EventBatch) -> None:
        self.rec.on_batch(batch)

    def finish_soon(
        self,
        code: str | None,
        *,
        cpu_ms: float = 0.0,
        output_bytes: int = 0,
        recovery: Recovery | None = None,
    ) -> None:
        """End it (from a callback of the event loop): ``code`` None when no timer is left."""
        if self._ending:
            return
        self._ending = True
        asyncio.get_running_loop().create_task(self._finish(code, cpu_ms, output_bytes, recovery))

    async def _finish(
        self, code: str | None, cpu_ms: float, output_bytes: int, recovery: Recovery | None
    ) -> None:
        try:
            if not await self._opened:
                self.ended.set_result(self.record)
                return
            if code is None:
                ending = Ending("ok", None, None, ("system", {"level": "info", "message": NO_TIMERS_LEFT}))
            else:
                ending = Ending.from_code(code, self.limits, recovery=recovery)
            metrics = {
                "wall_ms": round((time.monotonic() - self._started) * 1000, 3),
                "cpu_ms": cpu_ms,
                "output_bytes": output_bytes,
            }
            final, _failed = await self.finalizer.finish(self.record, self.rec, ending, metrics)
            self.record = final
        except Exception:  # noqa: BLE001 - never leave the future unresolved
            log.exception("background execution %s could not be ended", self.id)
        if not self.ended.done():
            self.ended.set_result(self.record)
