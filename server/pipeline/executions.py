"""The one execution pipeline for startup, REPL and run-file executions.

ready check and lock -> execution row -> run in the worker -> sequenced events (batched,
persisted, then published) -> after a kill, the session continues from its checkpoint ->
closing event -> finalize. The kinds differ only in the ``ExecRequest`` they pass. Every
persistence failure is reported to the caller, and an execution never stays ``running`` once
its run has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from server import errors
from server.events import EventTuple
from server.pipeline.background import BackgroundExecution
from server.pipeline.bus import EventBus
from server.pipeline.finalizer import Ending, Finalizer, Recovery
from server.pipeline.recorder import Recorder, new_execution
from server.pipeline.writer import EventWriter
from server.runtime import protocol
from server.runtime.handle import RunResult, WorkerHandle
from server.store.store import Store

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 0.2
WAIT_FOR_REBUILD_S = 30.0  # a request waits at most this long (or its wall limit) for a rebuild
BACKGROUND_CANCEL_S = 5.0


class SessionRuntime(Protocol):
    """What the pipeline needs of a live session (``server.core.live.LiveSession``)."""

    id: str
    row: dict[str, Any]
    lock: asyncio.Lock
    running: str | None
    closing: bool
    last_used: float
    worker: WorkerHandle | None
    background: BackgroundExecution | None
    limits: dict[str, Any]

    @property
    def rebuilding(self) -> bool: ...  # its worker is being replaced (start-up files may be running)

    async def current_limits(self) -> dict[str, Any]: ...

    async def recover(self, reason: str, *, clear_background: bool = False) -> Recovery: ...

    async def cancel_background(self) -> dict[str, Any] | None: ...


@dataclass
class ExecRequest:
    kind: str  # "repl" | "run_file" | "startup"
    source: str
    input: str | None = None
    path: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    wait: bool = True
    timers: str = "wait"  # "background": the run ends when its value settles (API.md §12)
    queue: bool = False  # wait for the session instead of answering SESSION_BUSY
    on_queued: Callable[[], None] | None = None  # told when a queued request has to wait
    # Told the execution's record once its row is committed and before any of its events is
    # published: a live follower registered here needs no backlog read (the WebSocket's execute).
    on_start: Callable[[dict[str, Any]], None] | None = None


@dataclass
class ExecOutcome:
    execution: dict[str, Any]
    events: list[EventTuple] | None
    failed_operation: str | None = None


class ExecutionPipeline:
    def __init__(
        self,
        store: Store,
        writer: EventWriter,
        bus: EventBus,
        *,
        cancel_grace_s: float = CANCEL_GRACE_S,
    ) -> None:
        self.store = store
        self.writer = writer
        self.bus = bus
        self.finalizer = Finalizer(store, writer, bus)
        self.cancel_grace_s = cancel_grace_s
        # Running executions: their task and their session.
        self.running: dict[str, tuple[asyncio.Task[ExecOutcome], SessionRuntime]] = {}
        self.backgrounds: dict[str, SessionRuntime] = {}
        self.shutting_down = False

    # ------------------------------------------------------------------ entry

    async def submit(self, live: SessionRuntime, req: ExecRequest, *, lock_held: bool = False) -> ExecOutcome:
        """Start an execution; with ``req.wait`` returns once it has ended and is stored."""
        if not lock_held:
            await self._acquire(live, req)
        # Shielded: once the lock is taken, a caller that goes away (a closed WebSocket, a
        # dropped HTTP connection) no longer stops the start; an execution row that gets
        # committed always gets its run and its finalization.
        start = asyncio.ensure_future(self._start(live, req, lock_held))
        record, task = await asyncio.shield(start)
        if not req.wait:
            return ExecOutcome(dict(record), None)
        return await asyncio.shield(task)

    def _check_ready(self, live: SessionRuntime) -> None:
        if self.shutting_down or live.row["status"] != "ready" or live.closing:
            raise errors.SessionNotReady(
                f"session {live.id} is {live.row['status']}"
                + (" and closing" if live.closing else "")
                + "; executions need a ready session",
                session_id=live.id,
                status=live.row["status"],
            )

    async def _acquire(self, live: SessionRuntime, req: ExecRequest) -> None:
        """Take the session's lock: at once, after the executions queued before this one
        (``queue``), or after a rebuild in progress; otherwise the session is busy."""
        self._check_ready(live)
        if live.lock.locked():
            # A start-up file of a rebuild is not another execution: wait for the rebuild.
            if live.running is not None and not req.queue and not live.rebuilding:
                raise errors.SessionBusy(
                    f"session {live.id} is running another execution; wait for it, cancel it, "
                    'or send "queue": true to run after it',
                    session_id=live.id,
                    running_execution_id=live.running,
                )
            wall_s = (live.limits.get("wall_ms") or 0) / 1000
            bound = None if req.queue else max(WAIT_FOR_REBUILD_S, wall_s + 5)
            if req.queue and req.on_queued is not None:
                req.on_queued()
            try:
                await asyncio.wait_for(live.lock.acquire(), bound)
            except TimeoutError:
                raise errors.SessionBusy(
                    f"session {live.id} is still being rebuilt; try again",
                    session_id=live.id,
                    running_execution_id=live.running,
                ) from None
        else:
            await live.lock.acquire()  # uncontended: does not yield
        try:
            self._check_ready(live)  # it may have closed or crashed while we waited
            worker = live.worker
            if worker is None or not worker.alive:
                # The worker died while idle and its rebuild has not run yet: do it now.
                if (await live.recover("WORKER_CRASHED")).state == "crashed":
                    self._check_ready(live)
        except BaseException:
            live.lock.release()
            raise

    async def _start(
        self, live: SessionRuntime, req: ExecRequest, lock_held: bool
    ) -> tuple[dict[str, Any], asyncio.Task[ExecOutcome]]:
        """Create the execution row (lock held) and launch its run."""
        try:
            limits = await live.current_limits()
            record = new_execution(
                live.id, req.kind, input=req.input, path=req.path, args=req.args, env=req.env
            )
            # A REPL's input echo (seq 1) is committed with the row itself: one commit fewer.
            first: list[EventTuple] = []
            if req.kind == "repl" and live.background is not None and self.writer.busy:
                # Its background execution's queued events got lower ids: commit them first,
                # so that a session's events are committed in id order (session cursors).
                with contextlib.suppress(Exception):
                    await self.writer.barrier()
            if req.kind == "repl":
                echo = orjson.dumps({"text": req.input}).decode()
                first = [(self.writer.allocate(1), record["id"], 1, record["started_at"], "input_echo", echo)]
            await self.store.create_execution(row=record, events=first)
        except BaseException:
            if not lock_held:
                live.lock.release()
            raise
        exec_id: str = record["id"]
        outer = live.running  # a startup run during a reset runs inside another execution
        live.running = exec_id
        # The run is scheduled before anything is published: its first step (sending the code
        # to the worker) then comes before the socket writes that the publishing wakes up.
        task = asyncio.create_task(
            self._drive(live, record, req, limits, lock_held, first, outer), name=f"exec-{exec_id}"
        )
        self.running[exec_id] = (task, live)
        task.add_done_callback(lambda _t: self._forget(exec_id))
        if req.on_start is not None:
            try:
                req.on_start(dict(record))
            except Exception:  # noqa: BLE001 - a follower's failure is not the execution's
                log.exception("execution %s: the start callback failed", exec_id)
        self.bus.publish_execution(record)
        self.bus.publish_events(first)
        return record, task

    def _forget(self, exec_id: str) -> None:
        self.running.pop(exec_id, None)
        self.writer.forget(exec_id)

    # ------------------------------------------------------------------ cancel

    async def cancel(self, execution_id: str) -> ExecOutcome | None:
        """Stop a running execution; returns its final state, or None if it is not running."""
        entry = self.running.get(execution_id)
        if entry is not None:
            task, live = entry
            if live.worker is not None:
                live.worker.cancel(execution_id, grace_s=self.cancel_grace_s)
            return await asyncio.shield(task)
        owner = self.backgrounds.get(execution_id)
        if owner is not None:
            final = await owner.cancel_background()
            if final is not None:
                return ExecOutcome(final, None)
        return None

    # ------------------------------------------------------------------ run

    async def _drive(
        self,
        live: SessionRuntime,
        record: dict[str, Any],
        req: ExecRequest,
        limits: dict[str, Any],
        lock_held: bool,
        first: list[EventTuple],
        outer: str | None,
    ) -> ExecOutcome:
        started = time.monotonic()
        exec_id = record["id"]

        def on_store_failure() -> None:
            if live.worker is not None:
                live.worker.cancel(exec_id, grace_s=self.cancel_grace_s)

        rec = Recorder(self.writer, exec_id, keep=req.wait, on_failure=on_store_failure)
        rec.already_stored(first)
        try:
            try:
                result = await self._run(live, rec, req, limits, exec_id)
            except Exception:  # noqa: BLE001 - whatever broke, the execution must still end
                log.exception("execution %s: the run failed", exec_id)
                if live.worker is not None:
                    live.worker.kill()
                result = RunResult(outcome=None, code="WORKER_CRASHED", killed=True)
            recovery = None
            # A startup file is never retried by a rebuild: the rebuild would run it again, and
            # a file that cannot finish would loop for ever. Start-up fails instead.
            if result.killed and req.kind != "startup" and not live.closing and not self.shutting_down:
                live.running = outer  # it is over: new requests now wait for the recovery
                recovery = await self._recover(live, result.code or "WORKER_CRASHED")
            ending = self._ending(result, limits, rec, recovery)
            # Its end is decided; only the commit is left. A request that comes now (a client
            # told of the end by another node, which hears of the commit before this loop does)
            # waits for the session, as during a rebuild, instead of finding it busy.
            live.running = outer
            metrics = {
                "wall_ms": round((time.monotonic() - started) * 1000, 3),
                "cpu_ms": result.cpu_ms,
                "output_bytes": result.output_bytes,
            }
            final, failed_op = await self.finalizer.finish(record, rec, ending, metrics)
            return ExecOutcome(final, rec.kept, failed_op)
        finally:
            live.running = outer
            live.last_used = time.monotonic()
            if not lock_held:
                live.lock.release()

    async def _recover(self, live: SessionRuntime, reason: str) -> Recovery:
        try:
            return await live.recover(reason, clear_background=reason == "BACKGROUND_KILLED")
        except Exception:  # noqa: BLE001 - a failed rebuild must not leave the execution open
            log.exception("session %s could not be rebuilt after %s", live.id, reason)
            return Recovery("crashed")

    async def _run(
        self,
        live: SessionRuntime,
        rec: Recorder,
        req: ExecRequest,
        limits: dict[str, Any],
        exec_id: str,
    ) -> RunResult:
        worker = live.worker
        if worker is None or not worker.alive:
            return RunResult(outcome=None, code="WORKER_CRASHED", killed=True)
        spec = protocol.Run(
            exec_id=exec_id,
            kind=req.kind,
            source=req.source,
            filename=req.path or "<repl>",
            limits=limits,
            args=req.args,
            env=req.env,
            timers=req.timers if req.kind == "repl" else "wait",
        )
        return await worker.run(spec, rec.on_batch)

    def _ending(
        self, result: RunResult, limits: dict[str, Any], rec: Recorder, recovery: Recovery | None
    ) -> Ending:
        """How a finished run ends: its value or exception, or the limit that stopped it."""
        code = result.code
        if code is None and result.outcome is not None:
            ending = Ending.from_outcome(result.outcome)
        else:
            if self.shutting_down and code in ("WORKER_CRASHED", "CANCELLED", None):
                code = "INTERRUPTED"
            ending = Ending.from_code(code or "WORKER_CRASHED", limits, recovery=recovery)
        max_events = limits.get("max_events") or 0
        if ending.terminal is not None and max_events and rec.seq >= max_events:
            # max_events counts every stored event, the closing one included (API.md §15). The
            # worker keeps the last slot for it, so this only happens when the events stored
            # before the run fill the budget (a REPL's echo with max_events 1): nothing, not even
            # the closing event, is stored past the limit, and a value or exception that does
            # not fit makes the run an output-limit stop.
            if ending.terminal[0] == "system":
                ending.terminal = None
            else:
                ending = Ending(
                    **{**vars(Ending.from_code("OUTPUT_LIMIT_EXCEEDED", limits)), "terminal": None}
                )
        return ending

    # ------------------------------------------------------------------ background executions

    def background_execution(self, live: SessionRuntime, limits: dict[str, Any]) -> BackgroundExecution:
        """The session's background execution, created when a run leaves timers behind."""
        bg = BackgroundExecution(
            session_id=live.id,
            limits=limits,
            store=self.store,
            writer=self.writer,
            bus=self.bus,
            finalizer=self.finalizer,
        )
        self.backgrounds[bg.id] = live
        bg.ended.add_done_callback(lambda _f: self.backgrounds.pop(bg.id, None))
        return bg

    # ------------------------------------------------------------------ shutdown

    async def interrupt_all(self, within_s: float = 10) -> None:
        """End every running execution as INTERRUPTED (graceful shutdown)."""
        self.shutting_down = True
        for exec_id, (_task, live) in list(self.running.items()):
            if live.worker is not None and live.running == exec_id:
                live.worker.kill()
        tasks = [task for task, _live in self.running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=within_s)
        for live in list(self.backgrounds.values()):
            if live.background is not None:
                live.background.finish_soon("INTERRUPTED")
        ends = [live.background.ended for live in self.backgrounds.values() if live.background is not None]
        if ends:
            await asyncio.wait(ends, timeout=within_s)
        await self.writer.flush()
        await self.finalizer.last_attempt()
