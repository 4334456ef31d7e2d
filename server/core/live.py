"""A live session and the one owner of its runtime: worker, checkpoint, rollback, reset, fork.

Everything that replaces or ends a session's worker happens here: the start-up (libraries and
startup files), the rollback to the checkpoint after a kill (API.md §11), the reset from the
template when no checkpoint is usable, a crash, a close; and the background execution that
timers left running (§12) follows the worker through all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from server import errors
from server.config import Settings
from server.core.paths import read_worktree_file
from server.core.policy import Policy
from server.core.templates import TemplateService
from server.events import EventBatch
from server.pipeline.background import BackgroundExecution
from server.pipeline.bus import EventBus
from server.pipeline.executions import WAIT_FOR_REBUILD_S, ExecRequest, ExecutionPipeline
from server.pipeline.finalizer import Recovery
from server.pipeline.writer import EventWriter
from server.runtime import libraries, modules, protocol
from server.runtime.handle import BackgroundListener, CheckpointHandle, WorkerError, WorkerHandle
from server.runtime.supervisor import WorkerPool
from server.store.store import Store

log = logging.getLogger(__name__)


@dataclass
class SessionContext:
    """What every live session shares: the services it calls and the registry it is in."""

    store: Store
    templates: TemplateService
    pool: WorkerPool
    bus: EventBus
    writer: EventWriter
    pipeline: ExecutionPipeline
    settings: Settings
    policy: Policy
    registry: dict[str, LiveSession] = field(default_factory=dict)
    background_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Counted for the metrics endpoint: sessions continued from their checkpoint, rebuilt.
    rollbacks: int = 0
    resets: int = 0

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.background_tasks.add(task)
        task.add_done_callback(self.background_tasks.discard)


class LiveSession(BackgroundListener):
    """A session with a worker process behind it (an entry of the session registry)."""

    def __init__(self, ctx: SessionContext, row: dict[str, Any], limits: dict[str, Any]) -> None:
        self.ctx = ctx
        self.id: str = row["id"]
        self.vm_id: str = row["vm_id"]
        self.worktree: str = row["worktree_path"]
        self.row = row
        self.limits = dict(limits)  # snapshot, used if the template is deleted
        self.init_config: dict[str, Any] = {}
        self.worker: WorkerHandle | None = None
        self.lock = asyncio.Lock()
        self.running: str | None = None
        self.closing = False
        self.last_used = time.monotonic()
        self.background: BackgroundExecution | None = None
        self._rebuilt = asyncio.Event()  # clear while ``recover`` replaces the worker
        self._rebuilt.set()

    # ------------------------------------------------------------------ state

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.row["runtime_meta"]
        return meta

    async def current_limits(self) -> dict[str, Any]:
        """The template's limits now (a PATCH applies from the next execution)."""
        settings = await self.ctx.templates.settings(self.vm_id)
        if settings is not None:
            self.limits = dict(settings["limits"])
        return dict(self.limits)

    async def set_status(self, status: str, **fields: Any) -> None:
        """Persist a status change, then apply it and announce it (never the other way round)."""
        await self.ctx.store.update_session(
            session_id=self.id, status=status, runtime_meta=self.meta, **fields
        )
        self.row.update(status=status, **fields)
        self.ctx.bus.publish_session(dict(self.row))

    async def _save_meta(self, **changes: Any) -> None:
        meta = {**self.meta, **changes}
        try:
            await self.ctx.store.update_session(session_id=self.id, runtime_meta=meta)
        except errors.StoreError:
            log.exception("session %s: could not store its runtime facts %s", self.id, changes)
        self.row["runtime_meta"] = meta
        self.ctx.bus.publish_session(dict(self.row))

    # ------------------------------------------------------------------ start-up

    async def boot(self, detail: dict[str, Any]) -> None:
        """Start a worker from the template and run its startup files (lock held)."""
        tpl, settings = detail["template"], detail["settings"]
        self.ctx.policy.check_template_modules(tpl["exposed_modules"], tpl["name"], session_id=self.id)
        cache_dir = self.ctx.settings.cache_dir
        libs: list[tuple[str, str]] = []
        for name in tpl["libraries"]:
            info = libraries.find(name)
            if info is None or not libraries.is_cached(cache_dir, name):
                raise errors.LibraryUnavailable(
                    f"failed to load libraries: library {name!r} is not in the local cache; run "
                    f"`vm-system libs download {name}` on the server",
                    name=name,
                    session_id=self.id,
                )
            libs.append((info.name, str(libraries.cache_path(cache_dir, info))))
        cap = self.ctx.settings.max_file_bytes
        sources = [
            (
                f["path"],
                await asyncio.to_thread(
                    read_worktree_file, self.worktree, f["path"], max_bytes=cap, session_id=self.id
                ),
            )
            for f in detail["startup_files"]
        ]
        self.init_config = {
            "worktree": self.worktree,
            "modules": modules.module_functions(tpl["exposed_modules"]),
            "strict": bool(settings["runtime"].get("strict")),
            "esm": bool(settings["runtime"].get("esm")),
            "mem_mb": settings["limits"].get("mem_mb") or 0,
            "libraries": libs,
            "checkpoints": self.ctx.settings.checkpoints,
            # Readable by the confined worker besides its worktree and the Python runtime.
            "read_only": [str(cache_dir)],
        }
        await self.start_worker()
        for path, source in sources:
            outcome = await self.ctx.pipeline.submit(
                self, ExecRequest(kind="startup", source=source, path=path), lock_held=True
            )
            ex = outcome.execution
            if outcome.failed_operation:
                raise errors.StoreError(outcome.failed_operation, session_id=self.id)
            if ex["status"] != "ok":
                reason = (ex.get("error") or {}).get("message", ex["status"])
                raise errors.StartupFailed(
                    f"startup file {path!r} failed: {reason}",
                    session_id=self.id,
                    execution_id=ex["id"],
                    path=path,
                )

    async def start_worker(self) -> None:
        try:
            worker = await self.ctx.pool.spawn()
            await worker.init(self.init_config)
        except WorkerError as exc:
            cls = {
                "LIBRARY_UNAVAILABLE": errors.LibraryUnavailable,
                "STARTUP_FAILED": errors.StartupFailed,
            }.get(exc.code, errors.Internal)
            message = exc.message
            if exc.code == "LIBRARY_UNAVAILABLE":
                message = f"failed to load libraries: {message}"
            raise cls(message, session_id=self.id) from None
        self.adopt(worker)
        self.row["runtime_meta"] = {**self.meta, "worker_pid": worker.pid}

    def adopt(self, worker: WorkerHandle) -> None:
        """Make ``worker`` this session's worker."""
        worker.throttle = self.ctx.writer.wait_capacity
        worker.listener = self
        worker.on_exit = self._on_worker_exit
        self.worker = worker

    # ------------------------------------------------------------------ recovery

    async def recover(self, reason: str, *, clear_background: bool = False) -> Recovery:
        """The worker was killed or died: continue from the checkpoint, or rebuild from the
        template when there is none (lock held)."""
        self._rebuilt.clear()
        try:
            return await self._recover(reason, clear_background)
        finally:
            self._rebuilt.set()

    async def _recover(self, reason: str, clear_background: bool) -> Recovery:
        old = self.worker
        self.worker = None
        ckpt = old.take_checkpoint() if old is not None else None
        lost = old.since_checkpoint if old is not None else 0
        if old is not None:
            old.kill()
        bg = self.background
        stuck = old.background_stuck if old is not None else None
        if stuck is not None:
            clear_background = True
        if ckpt is not None and ckpt.usable and await self._promote(ckpt, clear_background):
            self.ctx.rollbacks += 1
            await self._save_meta(rollbacks=self.meta.get("rollbacks", 0) + 1, worker_pid=self.worker_pid)
            log.info("session %s rolled back to its checkpoint after %s", self.id, reason)
            recovery = Recovery("rolled_back", lost)
        else:
            if ckpt is not None:
                ckpt.close()
            recovery = Recovery(await self._reset(reason))
        if bg is not None and self.background is bg and (clear_background or recovery.state != "rolled_back"):
            code = stuck[0] if stuck is not None else "WORKER_CRASHED"
            self.background = None
            bg.finish_soon(code, cpu_ms=stuck[1] if stuck is not None else 0.0, recovery=recovery)
        return recovery

    @property
    def rebuilding(self) -> bool:
        return not self._rebuilt.is_set()

    @property
    def worker_pid(self) -> int | None:
        return self.worker.pid if self.worker is not None else None

    async def _promote(self, ckpt: CheckpointHandle, clear_background: bool) -> bool:
        bg = self.background
        clear_background = clear_background or bg is None  # no execution to carry their output
        msg = protocol.Promote(
            background_limits=bg.limits if bg is not None and not clear_background else None,
            clear_background=clear_background,
        )
        try:
            worker = await ckpt.promote(self.ctx.pool.make_handle, msg)
        except WorkerError as exc:
            log.warning(
                "session %s: its checkpoint could not take over (%s); resetting", self.id, exc.message
            )
            return False
        self.adopt(worker)
        return True

    async def _reset(self, reason: str) -> str:
        """Rebuild the session from its template (libraries and startup files run again)."""
        try:
            detail = await self.ctx.templates.detail(self.vm_id)
        except errors.TemplateNotFound:
            detail = None
        try:
            if detail is None:
                # Template deleted: rebuild from the snapshot taken when the session started.
                await self.start_worker()
            else:
                await self.boot(detail)
        except errors.DomainError as exc:
            await self.crash(f"runtime reset after {reason} failed: {exc.message}")
            return "crashed"
        self.ctx.resets += 1
        await self._save_meta(resets=self.meta.get("resets", 0) + 1, worker_pid=self.worker_pid)
        log.info("session %s runtime reset after %s", self.id, reason)
        return "reset"

    def _on_worker_exit(self, worker: WorkerHandle) -> None:
        """A worker died while idle (killed from outside, or a background callback spun)."""
        if self.closing or self.worker is not worker or self.running is not None:
            return
        if self.row["status"] != "ready" or self.ctx.pipeline.shutting_down:
            return

        async def rebuild() -> None:
            async with self.lock:
                if self.worker is worker and not self.closing:
                    await self.recover("WORKER_CRASHED")

        self.ctx.spawn(rebuild())

    # ------------------------------------------------------------------ background timers

    def on_background_start(self, limits: dict[str, Any]) -> None:
        if self.background is None:
            self.background = self.ctx.pipeline.background_execution(self, limits)

    def on_background_events(self, batch: EventBatch) -> None:
        if self.background is not None:
            self.background.on_events(batch)

    def on_background_end(self, code: str | None, cpu_ms: float, output_bytes: int) -> None:
        bg, self.background = self.background, None
        if bg is not None:
            bg.finish_soon(code, cpu_ms=cpu_ms, output_bytes=output_bytes)

    async def cancel_background(self) -> dict[str, Any] | None:
        """Clear the background timers and end their execution as cancelled."""
        bg = self.background
        if bg is None:
            return None
        worker = self.worker
        if worker is None or not worker.alive or not worker.cancel_background():
            self.background = None
            bg.finish_soon("CANCELLED")
        try:
            return await asyncio.wait_for(asyncio.shield(bg.ended), 10)
        except TimeoutError:
            self.background = None
            bg.finish_soon("CANCELLED")
            return await bg.ended

    # ------------------------------------------------------------------ fork and completion

    async def fork_worker(self, config: dict[str, Any]) -> tuple[WorkerHandle, str | None]:
        """A new worker from this session's checkpoint, and the execution it reflects."""
        if not self._rebuilt.is_set():  # a rebuild in progress: wait for it, as executions do
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rebuilt.wait(), WAIT_FOR_REBUILD_S)
        worker = self.worker
        ckpt = None
        if worker is not None and self.ctx.settings.checkpoints:
            ckpt = await worker.current_checkpoint()
        if ckpt is None:
            raise errors.SessionNotReady(
                f"session {self.id} has no checkpoint to fork from (checkpoints are off, or it is "
                "being rebuilt); try again",
                session_id=self.id,
            )
        try:
            child = await ckpt.fork(self.ctx.pool.make_handle, config)
        except WorkerError as exc:
            if exc.code == "WORKER_CRASHED":  # the checkpoint died (or was discarded) meanwhile
                ckpt.close()
                raise errors.SessionNotReady(
                    f"session {self.id} has no checkpoint to fork from ({exc.message}); its "
                    "next execution takes a new one: try again then",
                    session_id=self.id,
                ) from None
            raise errors.Internal(
                f"could not fork session {self.id}: {exc.message}", session_id=self.id
            ) from None
        return child, ckpt.execution_id

    async def complete(self, text: str, cursor: int) -> protocol.Completions:
        """Answered by the checkpoint: it never disturbs the live worker, busy or not."""
        worker = self.worker
        if worker is None or not self.ctx.settings.checkpoints:
            return protocol.Completions(cursor, cursor, [])
        ckpt = await worker.current_checkpoint(within_s=1.0)
        if ckpt is None:
            ckpt = worker.checkpoint  # still being taken: the one before will do
        if ckpt is None or not ckpt.usable:
            return protocol.Completions(cursor, cursor, [])
        try:
            return await ckpt.complete(text, cursor)
        except WorkerError:
            return protocol.Completions(cursor, cursor, [])

    # ------------------------------------------------------------------ end of life

    async def crash(self, message: str) -> None:
        self.kill()
        self.ctx.registry.pop(self.id, None)
        bg, self.background = self.background, None
        if bg is not None:
            bg.finish_soon("WORKER_CRASHED")
        try:
            await self.set_status("crashed", last_error=message)
        except errors.StoreError:
            log.exception("could not mark session %s crashed", self.id)

    def kill(self) -> None:
        """Kill the worker and discard its checkpoint."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.kill()
            ckpt = worker.take_checkpoint()
            if ckpt is not None:
                ckpt.close()

    async def end_background(self, code: str) -> None:
        """End the background execution as the session closes or the server stops."""
        bg, self.background = self.background, None
        if bg is not None:
            bg.finish_soon(code)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(bg.ended), 10)
