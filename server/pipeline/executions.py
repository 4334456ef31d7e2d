"""The one execution pipeline for startup, REPL and run-file executions.

ready check and lock -> execution row -> run in the worker -> sequenced events (batched,
persisted, then published) -> terminal event -> finalize. The three kinds differ only in the
``ExecRequest`` they pass. Every persistence failure is reported to the caller, and an
execution never stays ``running`` once its run has ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from server import errors
from server.clock import now_iso
from server.events import EventBatch, EventTuple
from server.pipeline.bus import EventBus
from server.pipeline.writer import EventWriter
from server.runtime.supervisor import RunResult, WorkerHandle
from server.store.store import INTERRUPTED_EXECUTION, Store

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 0.2
FINALIZE_RETRY_S = 0.5

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
    "INTERRUPTED": ("error", INTERRUPTED_EXECUTION),
}


@dataclass
class LiveSession:
    """A session with a worker process behind it (registry entry of the session service)."""

    id: str
    vm_id: str
    worktree: str
    row: dict[str, Any]
    init_config: dict[str, Any]
    limits: dict[str, Any]  # snapshot, used if the template is deleted
    worker: WorkerHandle | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    running: str | None = None
    closing: bool = False
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class ExecRequest:
    kind: str  # "repl" | "run_file" | "startup"
    source: str
    input: str | None = None
    path: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    wait: bool = True


@dataclass
class ExecOutcome:
    execution: dict[str, Any]
    events: list[EventTuple] | None
    failed_operation: str | None = None


class Recorder:
    """Sequences the events of one execution and hands them to the writer."""

    def __init__(
        self,
        writer: EventWriter,
        execution_id: str,
        *,
        keep: bool,
        on_failure: Callable[[], None],
    ) -> None:
        self.writer = writer
        self.execution_id = execution_id
        self.seq = 0
        self.kept: list[EventTuple] | None = [] if keep else None
        self.failed = False
        self._on_failure = on_failure

    def on_batch(self, batch: EventBatch) -> None:
        if self.failed or not batch:
            return
        n = len(batch)
        base = self.writer.allocate(n)
        seq0 = self.seq + 1
        self.seq += n
        eid = self.execution_id
        rows = [(base + i, eid, seq0 + i, ts, typ, payload) for i, (ts, typ, payload) in enumerate(batch)]
        self._submit(rows)

    def already_stored(self, rows: list[EventTuple]) -> None:
        """Count events committed before the run (the input echo, stored with the row)."""
        self.seq += len(rows)
        if self.kept is not None:
            self.kept.extend(rows)

    def add(self, typ: str, payload: dict[str, Any]) -> None:
        self.on_batch([(now_iso(), typ, orjson.dumps(payload).decode())])

    def _submit(self, rows: list[EventTuple]) -> None:
        fut = self.writer.submit(rows)
        fut.add_done_callback(self._check)
        if self.kept is not None:
            self.kept.extend(rows)

    def _check(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None and not self.failed:
            self.failed = True
            self._on_failure()


class ExecutionPipeline:
    def __init__(
        self,
        store: Store,
        writer: EventWriter,
        bus: EventBus,
        *,
        limits_for: Callable[[LiveSession], Awaitable[dict[str, Any]]],
        reset: Callable[[LiveSession, str], Awaitable[bool]],
        cancel_grace_s: float = CANCEL_GRACE_S,
    ) -> None:
        self.store = store
        self.writer = writer
        self.bus = bus
        self._limits_for = limits_for
        self._reset = reset
        self.cancel_grace_s = cancel_grace_s
        # Running executions: their task and their session.
        self.running: dict[str, tuple[asyncio.Task[ExecOutcome], LiveSession]] = {}
        self.shutting_down = False
        self._unfinalized: dict[str, dict[str, Any]] = {}
        self._retry_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ entry

    async def submit(self, live: LiveSession, req: ExecRequest, *, lock_held: bool = False) -> ExecOutcome:
        """Start an execution; with ``req.wait`` returns once it has ended and is stored."""
        if not lock_held:
            if self.shutting_down or live.row["status"] != "ready" or live.closing:
                raise errors.SessionNotReady(
                    f"session {live.id} is {live.row['status']}"
                    + (" and closing" if live.closing else "")
                    + "; executions need a ready session",
                    session_id=live.id,
                    status=live.row["status"],
                )
            if live.lock.locked():
                raise errors.SessionBusy(
                    f"session {live.id} is running another execution; wait for it or cancel it",
                    session_id=live.id,
                    running_execution_id=live.running,
                )
            await live.lock.acquire()  # uncontended: does not yield
        # Shielded: once the lock is taken, a caller that goes away (a closed WebSocket, a
        # dropped HTTP connection) no longer stops the start; an execution row that gets
        # committed always gets its run and its finalization.
        start = asyncio.ensure_future(self._start(live, req, lock_held))
        record, task = await asyncio.shield(start)
        if not req.wait:
            return ExecOutcome(dict(record), None)
        return await asyncio.shield(task)

    async def _start(
        self, live: LiveSession, req: ExecRequest, lock_held: bool
    ) -> tuple[dict[str, Any], asyncio.Task[ExecOutcome]]:
        """Create the execution row (lock held) and launch its run."""
        try:
            limits = await self._limits_for(live)
            record: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "session_id": live.id,
                "kind": req.kind,
                "input": req.input,
                "path": req.path,
                "args": req.args,
                "env": req.env,
                "status": "running",
                "started_at": now_iso(),
                "ended_at": None,
                "result": None,
                "error": None,
                "metrics": {},
            }
            # A REPL's input echo (seq 1) is committed with the row itself: one commit fewer.
            first: list[EventTuple] = []
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
        self.bus.publish_execution(record)
        self.bus.publish_events(first)
        task = asyncio.create_task(
            self._drive(live, record, req, limits, lock_held, first, outer), name=f"exec-{exec_id}"
        )
        self.running[exec_id] = (task, live)
        task.add_done_callback(lambda _t: self._forget(exec_id))
        return record, task

    def _forget(self, exec_id: str) -> None:
        self.running.pop(exec_id, None)
        self.writer.forget(exec_id)

    # ------------------------------------------------------------------ cancel

    async def cancel(self, execution_id: str) -> ExecOutcome | None:
        """Stop a running execution; returns its final state, or None if it is not running."""
        entry = self.running.get(execution_id)
        if entry is None:
            return None
        task, live = entry
        if live.worker is not None:
            live.worker.cancel(execution_id, grace_s=self.cancel_grace_s)
        return await asyncio.shield(task)

    # ------------------------------------------------------------------ run

    async def _drive(
        self,
        live: LiveSession,
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
            status, result_payload, error, terminal = self._conclude(result, limits, rec)
            max_events = limits.get("max_events") or 0
            if terminal is not None and max_events and rec.seq >= max_events:
                # The last slot is kept for the terminal event, so this only happens when the
                # events stored before the run fill the budget (a REPL's echo, max_events 1).
                # The value or exception does not fit: the run is an output-limit stop, and
                # nothing, not even the closing event, is stored past the limit.
                if terminal[0] != "system":
                    stop = RunResult(outcome=None, code="OUTPUT_LIMIT_EXCEEDED", killed=False)
                    status, result_payload, error, _ = self._conclude(stop, limits, rec)
                terminal = None
            # A startup file is never retried by a reset: the rebuild would run it again, and a
            # file that cannot finish would loop for ever. Start-up fails instead.
            if result.killed and req.kind != "startup" and not live.closing and not self.shutting_down:
                ok = await self._reset_safely(live, result.code or "WORKER_CRASHED")
                note = (
                    "; the session's runtime was reset and its state was lost"
                    if ok
                    else "; the session could not be rebuilt and is now crashed"
                )
                if terminal is not None and terminal[0] == "system":
                    terminal[1]["message"] += note
                    terminal[1]["reset"] = ok
            if terminal is not None and not rec.failed:
                rec.add(*terminal)
            metrics = {
                "wall_ms": round((time.monotonic() - started) * 1000, 3),
                "cpu_ms": result.cpu_ms,
                "event_count": rec.seq,
                "output_bytes": result.output_bytes,
            }
            final = {
                **record,
                "status": status,
                "ended_at": now_iso(),
                "result": result_payload,
                "error": error,
                "metrics": metrics,
            }
            failed_op = await self._finalize(final, rec)
            return ExecOutcome(final, rec.kept, failed_op)
        finally:
            live.running = outer
            live.last_used = time.monotonic()
            if not lock_held:
                live.lock.release()

    async def _reset_safely(self, live: LiveSession, reason: str) -> bool:
        try:
            return await self._reset(live, reason)
        except Exception:  # noqa: BLE001 - a failed rebuild must not leave the execution open
            log.exception("session %s could not be rebuilt after %s", live.id, reason)
            return False

    async def _run(
        self,
        live: LiveSession,
        rec: Recorder,
        req: ExecRequest,
        limits: dict[str, Any],
        exec_id: str,
    ) -> RunResult:
        worker = live.worker
        if worker is None or not worker.alive:
            return RunResult(outcome=None, code="WORKER_CRASHED", killed=True)
        spec = {
            "exec_id": exec_id,
            "kind": req.kind,
            "source": req.source,
            "filename": req.path or "<repl>",
            "args": req.args,
            "env": req.env,
            "limits": limits,
        }
        return await worker.run(spec, rec.on_batch)

    def _conclude(
        self, result: RunResult, limits: dict[str, Any], rec: Recorder
    ) -> tuple[str, Any, Any, tuple[str, dict[str, Any]] | None]:
        """(status, result, error, terminal event) for a finished run."""
        if rec.failed:
            err = {"code": "INTERNAL", "message": "store failure: could not store events"}
            return "error", None, err, None
        code = result.code
        if code is None and result.outcome is not None:
            kind, payload = result.outcome
            if kind == "value":
                return "ok", payload, None, ("value", payload)
            return "error", None, payload, ("exception", payload)
        if self.shutting_down and code in ("WORKER_CRASHED", "CANCELLED", None):
            code = "INTERRUPTED"
        status, text = _LIMIT_TEXT.get(code or "WORKER_CRASHED", _LIMIT_TEXT["WORKER_CRASHED"])
        message = text.format(
            **{k: limits.get(k, 0) for k in ("cpu_ms", "wall_ms", "max_events", "max_output_kb")}
        )
        err = {"code": code or "WORKER_CRASHED", "message": message}
        level = "warn" if status == "cancelled" else "error"
        return (
            status,
            None,
            err,
            ("system", {"level": level, "message": message, "code": err["code"]}),
        )

    async def _finalize(self, final: dict[str, Any], rec: Recorder) -> str | None:
        """Store the final record with the last events; returns the failed operation, if any."""
        fin = {k: final[k] for k in ("id", "status", "ended_at", "result", "error", "metrics")}
        failed_op = "store events" if rec.failed else None
        try:
            await self.writer.submit([], finalize=fin, publish=final)
            return failed_op
        except Exception:  # noqa: BLE001 - retried below with a minimal record
            log.exception("finalize of execution %s failed; retrying", final["id"])
        fallback = {
            **fin,
            "status": "error",
            "result": None,
            "error": {"code": "INTERNAL", "message": "store failure: could not finalize execution"},
        }
        final.update(fallback)
        if not await self._write_final(final):
            # Keep trying in the background so the row does not stay "running" once the store
            # recovers; shutdown makes a last attempt (restart reconciliation is the backstop).
            self._unfinalized[final["id"]] = final
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = asyncio.create_task(self._retry_finalize(), name="finalize-retry")
        return failed_op or "finalize execution"

    async def _write_final(self, final: dict[str, Any]) -> bool:
        """Store a fallback final record directly and announce it; False if the store failed."""
        fin = {k: final[k] for k in ("id", "status", "ended_at", "result", "error", "metrics")}
        try:
            await self.store.write_batch(events=(), finalize=[fin])
        except Exception:  # noqa: BLE001 - the caller decides whether to retry
            log.exception("execution %s could not be finalized", fin["id"])
            return False
        self.bus.publish_execution(final)
        return True

    async def _retry_finalize(self) -> None:
        delay = FINALIZE_RETRY_S
        while self._unfinalized:
            await asyncio.sleep(delay)
            for exec_id, final in list(self._unfinalized.items()):
                if await self._write_final(final):
                    self._unfinalized.pop(exec_id, None)
            delay = min(delay * 2, 30.0)

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
        await self.writer.flush()
        if self._retry_task is not None:
            self._retry_task.cancel()
        for exec_id, final in list(self._unfinalized.items()):
            if await self._write_final(final):
                self._unfinalized.pop(exec_id, None)
