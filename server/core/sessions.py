"""Session service: the registry of live sessions, their start-up, reset, close and expiry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from server import errors
from server.clock import now_iso
from server.config import Settings
from server.core.paths import read_worktree_file
from server.core.policy import Policy
from server.core.schemas import SessionCreate
from server.core.templates import TemplateService, parse_uuid
from server.pipeline.bus import EventBus
from server.pipeline.executions import ExecRequest, ExecutionPipeline, LiveSession
from server.pipeline.writer import EventWriter
from server.runtime import libraries, modules
from server.runtime.supervisor import WorkerError, WorkerPool
from server.store.store import Store

log = logging.getLogger(__name__)

SESSION_STATUSES = ("starting", "ready", "crashed", "closed")


class StartupError(Exception):
    def __init__(self, error: errors.DomainError) -> None:
        super().__init__(error.message)
        self.error = error


class SessionService:
    def __init__(
        self,
        *,
        store: Store,
        templates: TemplateService,
        pool: WorkerPool,
        bus: EventBus,
        writer: EventWriter,
        settings: Settings,
        policy: Policy,
    ) -> None:
        self.store = store
        self.policy = policy
        self.templates = templates
        self.pool = pool
        self.bus = bus
        self.writer = writer
        self.settings = settings
        self.live: dict[str, LiveSession] = {}
        self.pipeline = ExecutionPipeline(
            store,
            writer,
            bus,
            limits_for=self._limits_for,
            reset=self._reset_locked,
            cancel_grace_s=settings.cancel_grace_s,
        )
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ queries

    async def get(self, raw_id: str) -> dict[str, Any]:
        session_id = parse_uuid(raw_id, "session")
        live = self.live.get(session_id)
        if live is not None:
            return dict(live.row)
        row = await self.store.get_session(session_id=session_id)
        if row is None:
            raise errors.SessionNotFound(f"session {session_id} does not exist", session_id=session_id)
        return row

    async def list(self, *, status: str | None, template_id: str | None) -> list[dict[str, Any]]:
        if status is not None and status not in SESSION_STATUSES:
            raise errors.ValidationError(
                f"status must be one of {', '.join(SESSION_STATUSES)}, got {status!r}"
            )
        vm = parse_uuid(template_id, "template") if template_id else None
        rows = await self.store.list_sessions(status=status, template_id=vm)
        return [dict(self.live[r["id"]].row) if r["id"] in self.live else r for r in rows]

    async def require_live_id(self, raw_id: str) -> LiveSession:
        session_id = parse_uuid(raw_id, "session")
        live = self.live.get(session_id)
        if live is not None:
            return live
        row = await self.store.get_session(session_id=session_id)
        if row is None:
            raise errors.SessionNotFound(f"session {session_id} does not exist", session_id=session_id)
        raise errors.SessionNotReady(
            f"session {session_id} is {row['status']}; executions need a ready session",
            session_id=session_id,
            status=row["status"],
        )

    def summary(self) -> dict[str, Any]:
        active = sorted(sid for sid, s in self.live.items() if s.row["status"] in ("starting", "ready"))
        return {
            "active_sessions": len(active),
            "active_session_ids": active,
            "running_executions": len(self.pipeline.running),
            "sandbox": dict(self.policy.sandbox),
        }

    # ------------------------------------------------------------------ create

    async def create(self, body: SessionCreate) -> dict[str, Any]:
        for name in ("template_id", "workspace_id", "base_commit_oid", "worktree_path"):
            if not getattr(body, name).strip():
                raise errors.ValidationError(f"{name} is required")
        template_id = parse_uuid(body.template_id, "template")
        worktree = self.policy.check_worktree(body.worktree_path)
        detail = await self.templates.detail(template_id)
        tpl_row = detail["template"]
        self.policy.check_template_modules(
            tpl_row["exposed_modules"], tpl_row["name"], template_id=template_id
        )
        if self.settings.max_sessions and len(self.live) >= self.settings.max_sessions:
            raise errors.TooManySessions(
                f"the server already runs its maximum of {self.settings.max_sessions} sessions; "
                "close one or raise --max-sessions",
                max_sessions=self.settings.max_sessions,
            )
        tpl, settings = detail["template"], detail["settings"]
        now = now_iso()
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "vm_id": template_id,
            "workspace_id": body.workspace_id.strip(),
            "base_commit_oid": body.base_commit_oid.strip(),
            "worktree_path": worktree,
            "status": "starting",
            "created_at": now,
            "closed_at": None,
            "last_error": None,
            "runtime_meta": {
                "template_name": tpl["name"],
                "engine": tpl["engine"],
                "limits": settings["limits"],
                "runtime": settings["runtime"],
                "modules": tpl["exposed_modules"],
                "libraries": tpl["libraries"],
                "startup_files": [f["path"] for f in detail["startup_files"]],
                "worker_pid": None,
                "resets": 0,
            },
        }
        live = LiveSession(
            id=row["id"],
            vm_id=template_id,
            worktree=worktree,
            row=row,
            init_config={},
            limits=settings["limits"],
        )
        self.live[live.id] = live
        try:
            await self.store.create_session(row=row)
        except BaseException:
            self.live.pop(live.id, None)
            raise
        async with live.lock:
            try:
                await self._boot(live, detail)
            except StartupError as exc:
                await self._crash(live, exc.error.message)
                exc.error.details.setdefault("session_id", live.id)
                raise exc.error from None
            except errors.DomainError as exc:
                await self._crash(live, exc.message)
                exc.details.setdefault("session_id", live.id)
                raise
            except BaseException:
                await self._crash(live, "session start-up was interrupted")
                raise
            # Still under the lock: a close waiting for start-up sees a settled status.
            await self._set_status(live, "ready")
        return dict(live.row)

    async def _boot(self, live: LiveSession, detail: dict[str, Any]) -> None:
        """Start a worker from the template and run its startup files (lock held)."""
        tpl, settings = detail["template"], detail["settings"]
        self.policy.check_template_modules(tpl["exposed_modules"], tpl["name"], session_id=live.id)
        libs: list[tuple[str, str]] = []
        for name in tpl["libraries"]:
            info = libraries.find(name)
            if info is None or not libraries.is_cached(self.settings.cache_dir, name):
                raise StartupError(
                    errors.LibraryUnavailable(
                        f"library {name!r} is not in the local cache; run "
                        f"`vm-system libs download {name}` on the server",
                        name=name,
                        session_id=live.id,
                    )
                )
            libs.append((info.name, str(libraries.cache_path(self.settings.cache_dir, info))))
        sources = [
            (f["path"], read_worktree_file(live.worktree, f["path"], session_id=live.id))
            for f in detail["startup_files"]
        ]
        live.init_config = {
            "worktree": live.worktree,
            "modules": modules.module_functions(tpl["exposed_modules"]),
            "strict": bool(settings["runtime"].get("strict")),
            "esm": bool(settings["runtime"].get("esm")),
            "mem_mb": settings["limits"].get("mem_mb") or 0,
            "libraries": libs,
            # Readable by the confined worker besides its worktree and the Python runtime.
            "read_only": [str(self.settings.cache_dir)],
        }
        await self._start_worker(live)
        for path, source in sources:
            outcome = await self.pipeline.submit(
                live, ExecRequest(kind="startup", source=source, path=path), lock_held=True
            )
            ex = outcome.execution
            if outcome.failed_operation:
                raise StartupError(errors.StoreError(outcome.failed_operation, session_id=live.id))
            if ex["status"] != "ok":
                reason = (ex.get("error") or {}).get("message", ex["status"])
                raise StartupError(
                    errors.StartupFailed(
                        f"startup file {path!r} failed: {reason}",
                        session_id=live.id,
                        execution_id=ex["id"],
                        path=path,
                    )
                )

    async def _start_worker(self, live: LiveSession) -> None:
        try:
            worker = await self.pool.spawn()
            await worker.init(live.init_config)
        except WorkerError as exc:
            cls = {
                "LIBRARY_UNAVAILABLE": errors.LibraryUnavailable,
                "STARTUP_FAILED": errors.StartupFailed,
            }.get(exc.code, errors.Internal)
            raise StartupError(cls(exc.message, session_id=live.id)) from None
        worker.throttle = self.writer.wait_capacity
        worker.on_exit = lambda w, live=live: self._on_worker_exit(live, w)
        live.worker = worker
        live.row["runtime_meta"] = {**live.row["runtime_meta"], "worker_pid": worker.pid}

    def _on_worker_exit(self, live: LiveSession, worker: Any) -> None:
        """A worker died while idle (killed from outside): rebuild the session in place."""
        if live.closing or live.worker is not worker or live.running is not None:
            return
        if live.row["status"] != "ready" or self.pipeline.shutting_down:
            return

        async def rebuild() -> None:
            async with live.lock:
                if live.worker is worker and not live.closing:
                    await self._reset_locked(live, "WORKER_CRASHED")

        self._spawn_background(rebuild())

    def _spawn_background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reset_locked(self, live: LiveSession, reason: str) -> bool:
        """Kill the worker and rebuild the session from its template (lock held)."""
        if live.worker is not None:
            live.worker.kill()
            live.worker = None
        meta = live.row["runtime_meta"]
        try:
            detail = await self.templates.detail(live.vm_id)
        except errors.TemplateNotFound:
            detail = None
        try:
            if detail is None:
                # Template deleted: rebuild from the snapshot taken when the session started.
                await self._start_worker(live)
            else:
                await self._boot(live, detail)
        except (StartupError, errors.DomainError) as exc:
            message = exc.error.message if isinstance(exc, StartupError) else exc.message
            await self._crash(live, f"runtime reset after {reason} failed: {message}")
            return False
        live.row["runtime_meta"] = {**live.row["runtime_meta"], "resets": meta.get("resets", 0) + 1}
        with contextlib.suppress(errors.StoreError):
            await self.store.update_session(session_id=live.id, runtime_meta=live.row["runtime_meta"])
        self.bus.publish_session(dict(live.row))
        log.info("session %s runtime reset after %s", live.id, reason)
        return True

    async def _limits_for(self, live: LiveSession) -> dict[str, Any]:
        settings = await self.templates.settings(live.vm_id)
        return dict(settings["limits"]) if settings is not None else dict(live.limits)

    # ------------------------------------------------------------------ status changes

    async def _set_status(self, live: LiveSession, status: str, **fields: Any) -> None:
        live.row.update(status=status, **fields)
        await self.store.update_session(
            session_id=live.id, status=status, runtime_meta=live.row["runtime_meta"], **fields
        )
        self.bus.publish_session(dict(live.row))

    async def _crash(self, live: LiveSession, message: str) -> None:
        if live.worker is not None:
            live.worker.kill()
            live.worker = None
        self.live.pop(live.id, None)
        try:
            await self._set_status(live, "crashed", last_error=message)
        except errors.StoreError:
            log.exception("could not mark session %s crashed", live.id)

    async def close(self, raw_id: str, *, reason: str | None = None) -> dict[str, Any]:
        session_id = parse_uuid(raw_id, "session")
        live = self.live.get(session_id)
        if live is not None:
            live.closing = True
            running = live.running
            if running is not None:
                await self.pipeline.cancel(running)
            async with live.lock:
                if self.live.get(session_id) is live:
                    if live.worker is not None:
                        live.worker.kill()
                        live.worker = None
                    self.live.pop(session_id, None)
                    fields: dict[str, Any] = {"closed_at": now_iso()}
                    if reason:
                        fields["last_error"] = reason
                    await self._set_status(live, "closed", **fields)
                    return dict(live.row)
            # It crashed (or was closed) while we waited: settle the stored row below.
        return await self._close_row(session_id)

    async def _close_row(self, session_id: str) -> dict[str, Any]:
        """Close a session that has no live runtime (crashed, or a stale row): idempotent."""
        row = await self.store.get_session(session_id=session_id)
        if row is None:
            raise errors.SessionNotFound(f"session {session_id} does not exist", session_id=session_id)
        if row["status"] != "closed":
            closing = {"status": "closed", "closed_at": now_iso()}
            await self.store.update_session(session_id=session_id, **closing)
            row.update(closing)
            self.bus.publish_session(dict(row))
        return row

    # ------------------------------------------------------------------ lifecycle

    def start_reaper(self) -> None:
        if self.settings.idle_timeout_s > 0:
            self._reaper = asyncio.create_task(self._reap_idle(), name="idle-reaper")

    async def _reap_idle(self) -> None:
        timeout = self.settings.idle_timeout_s
        while True:
            await asyncio.sleep(min(timeout / 4, 5.0))
            now = time.monotonic()
            for live in list(self.live.values()):
                if live.running is None and not live.lock.locked() and now - live.last_used > timeout:
                    try:
                        await self.close(
                            live.id,
                            reason=f"closed after {timeout:g} s without executions (idle timeout)",
                        )
                    except errors.DomainError:
                        log.exception("idle close of session %s failed", live.id)

    async def shutdown(self) -> None:
        log.info(
            "shutting down: interrupting %d running execution(s), closing %d session(s)",
            len(self.pipeline.running),
            len(self.live),
        )
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.pipeline.interrupt_all()
        for task in list(self._background):
            task.cancel()
        for live in list(self.live.values()):
            live.closing = True
            if live.worker is not None:
                live.worker.kill()
                live.worker = None
            try:
                await self._set_status(
                    live, "closed", closed_at=now_iso(), last_error="closed at server shutdown"
                )
            except errors.StoreError:
                log.exception("could not close session %s at shutdown", live.id)
        self.live.clear()
