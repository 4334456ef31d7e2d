"""Session service: the registry of live sessions and what the API does with them (create,
fork, close, completion, expiry, shutdown). Each session's runtime is owned by its
``LiveSession`` (``server/core/live.py``)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
import uuid
from typing import Any

from server import errors
from server.clock import now_iso
from server.config import Settings
from server.core.live import LiveSession, SessionContext
from server.core.params import parse_uuid
from server.core.policy import Policy
from server.core.schemas import SessionCreate, SessionFork
from server.core.templates import TemplateService
from server.pipeline.bus import EventBus
from server.pipeline.executions import ExecutionPipeline
from server.pipeline.writer import EventWriter
from server.runtime.supervisor import WorkerPool
from server.store.store import Store

log = logging.getLogger(__name__)

SESSION_STATUSES = ("starting", "ready", "crashed", "closed")
MAX_COMPLETION_CONTEXT = 4096  # characters before the cursor that completion looks at


class SessionService:
    def __init__(
        self,
        *,
        store: Store,
        templates: TemplateService,
        pool: WorkerPool,
        bus: EventBus,
        writer: EventWriter,
        pipeline: ExecutionPipeline,
        settings: Settings,
        policy: Policy,
    ) -> None:
        self.store = store
        self.policy = policy
        self.templates = templates
        self.settings = settings
        self.pipeline = pipeline
        self.ctx = SessionContext(
            store=store,
            templates=templates,
            pool=pool,
            bus=bus,
            writer=writer,
            pipeline=pipeline,
            settings=settings,
            policy=policy,
        )
        self.live = self.ctx.registry
        self.node_id = settings.effective_node_id  # every session this node creates is its own
        self._reaper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ queries

    async def get(self, raw_id: str) -> dict[str, Any]:
        session_id = parse_uuid(raw_id, "session")
        live = self.live.get(session_id)
        if live is not None:
            return dict(live.row)
        return await self._stored(session_id)

    async def _stored(self, session_id: str) -> dict[str, Any]:
        row = await self.store.get_session(session_id=session_id)
        if row is None:
            raise errors.SessionNotFound(f"session {session_id} does not exist", session_id=session_id)
        return row

    async def list(self, *, status: str | None, template_id: str | None) -> list[dict[str, Any]]:
        if status is not None and status not in SESSION_STATUSES:
            raise errors.ValidationError(
                f"status must be one of {', '.join(SESSION_STATUSES)}, got {status!r}"
            )
        vm = parse_uuid(template_id, "template") if template_id is not None else None
        rows = await self.store.list_sessions(status=status, template_id=vm)
        return [dict(self.live[r["id"]].row) if r["id"] in self.live else r for r in rows]

    async def require_live_id(self, raw_id: str) -> LiveSession:
        session_id = parse_uuid(raw_id, "session")
        live = self.live.get(session_id)
        if live is not None:
            return live
        row = await self._stored(session_id)
        raise errors.SessionNotReady(
            f"session {session_id} is {row['status']}; executions need a ready session",
            session_id=session_id,
            status=row["status"],
        )

    def summary(self) -> dict[str, Any]:
        active = sorted(sid for sid, s in self.live.items() if s.row["status"] in ("starting", "ready"))
        return {
            "node_id": self.node_id,
            "active_sessions": len(active),
            "active_session_ids": active,
            "running_executions": len(self.pipeline.running) + len(self.pipeline.backgrounds),
            "sandbox": dict(self.policy.sandbox),
        }

    # ------------------------------------------------------------------ create

    def _check_room(self) -> None:
        cap = self.settings.max_sessions
        if cap and len(self.live) >= cap:
            raise errors.TooManySessions(
                f"the server already runs its maximum of {cap} sessions; close one or raise --max-sessions",
                max_sessions=cap,
            )

    async def _register(self, row: dict[str, Any], limits: dict[str, Any]) -> LiveSession:
        live = LiveSession(self.ctx, row, limits)
        self.live[live.id] = live
        try:
            await self.store.create_session(row=row)
        except BaseException:
            self.live.pop(live.id, None)
            raise
        return live

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
        self._check_room()
        tpl, settings = detail["template"], detail["settings"]
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "vm_id": template_id,
            "workspace_id": body.workspace_id.strip(),
            "base_commit_oid": body.base_commit_oid.strip(),
            "worktree_path": worktree,
            "status": "starting",
            "created_at": now_iso(),
            "closed_at": None,
            "last_error": None,
            "node_id": self.node_id,
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
                "rollbacks": 0,
            },
        }
        live = await self._register(row, settings["limits"])
        async with live.lock:
            await self._settle_start(live, live.boot(detail))
        return dict(live.row)

    async def _settle_start(self, live: LiveSession, start: Any) -> None:
        """Run a start-up (lock held): ready when it succeeds, crashed with the reason when not."""
        try:
            await start
        except errors.DomainError as exc:
            await live.crash(exc.message)
            exc.details.setdefault("session_id", live.id)
            raise
        except BaseException:
            await live.crash("session start-up was interrupted")
            raise
        # Still under the lock: a close waiting for start-up sees a settled status.
        try:
            await live.set_status("ready")
        except BaseException:
            await live.crash("session start-up could not be recorded")
            raise

    # ------------------------------------------------------------------ fork

    async def fork(self, raw_id: str, body: SessionFork) -> dict[str, Any]:
        """A new session holding a copy of this one's state as of its checkpoint (API.md §11)."""
        session_id = parse_uuid(raw_id, "session")
        parent = self.live.get(session_id)
        if parent is None or parent.closing or parent.row["status"] != "ready":
            status = (
                parent.row["status"] if parent is not None else (await self._stored(session_id))["status"]
            )
            raise errors.SessionNotReady(
                f"session {session_id} is {status}; only a ready session can be forked",
                session_id=session_id,
                status=status,
            )
        worktree = self._fork_worktree(parent, body.worktree_path)
        self._check_room()
        prow = parent.row
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "vm_id": prow["vm_id"],
            "workspace_id": (body.workspace_id or "").strip() or prow["workspace_id"],
            "base_commit_oid": (body.base_commit_oid or "").strip() or prow["base_commit_oid"],
            "worktree_path": worktree,
            "status": "starting",
            "created_at": now_iso(),
            "closed_at": None,
            "last_error": None,
            "node_id": self.node_id,
            "runtime_meta": {**parent.meta, "worker_pid": None, "resets": 0, "rollbacks": 0},
        }
        config = {"worktree": worktree, "mem_mb": parent.limits.get("mem_mb") or 0}
        # The fork is made from the checkpoint: an execution running in the parent is not
        # waited for, and none of its effects are copied.
        worker, last = await parent.fork_worker(config)
        row["runtime_meta"]["forked_from"] = {"session_id": parent.id, "execution_id": last}
        row["runtime_meta"]["worker_pid"] = worker.pid
        try:
            live = await self._register(row, parent.limits)
        except BaseException:
            await worker.close()
            raise
        live.init_config = {**parent.init_config, "worktree": worktree}
        live.adopt(worker)
        async with live.lock:
            await self._settle_start(live, _done())
        return dict(live.row)

    @staticmethod
    def _fork_worktree(parent: LiveSession, raw: str | None) -> str:
        """The parent's worktree or a directory inside it: a fork can narrow file access, never
        widen it (its runtime inherits the parent's confinement)."""
        if raw is None or not raw.strip():
            return parent.worktree
        worktree = parent.ctx.policy.check_worktree(raw)
        root = os.path.realpath(parent.worktree)
        real = os.path.realpath(worktree)
        if real != root and not real.startswith(root + os.sep):
            raise errors.InvalidPath(
                f"worktree_path of a fork must be the parent's worktree or a directory inside it "
                f"({parent.worktree}), got {raw!r}",
                worktree_path=raw,
                session_id=parent.id,
            )
        return real

    # ------------------------------------------------------------------ completion

    async def complete(self, raw_id: str, text: str, cursor: int | None) -> dict[str, Any]:
        live = await self.require_live_id(raw_id)
        end = len(text) if cursor is None else cursor
        if end < 0 or end > len(text):
            raise errors.ValidationError(
                f"cursor must be between 0 and {len(text)} (the input's length), got {end}"
            )
        # Only the text just before the cursor matters; offsets are given in the whole input.
        skip = max(0, end - MAX_COMPLETION_CONTEXT)
        found = await live.complete(text[skip:end], end - skip)
        return {"from": found.start + skip, "to": found.end + skip, "candidates": found.candidates}

    # ------------------------------------------------------------------ close

    async def close(self, raw_id: str, *, reason: str | None = None) -> dict[str, Any]:
        session_id = parse_uuid(raw_id, "session")
        live = self.live.get(session_id)
        if live is not None:
            live.closing = True
            running = live.running
            if running is not None:
                await self.pipeline.cancel(running)
            await live.end_background("CANCELLED")
            async with live.lock:
                if self.live.get(session_id) is live:
                    live.kill()
                    self.live.pop(session_id, None)
                    fields: dict[str, Any] = {"closed_at": now_iso()}
                    if reason:
                        fields["last_error"] = reason
                    await live.set_status("closed", **fields)
                    return dict(live.row)
            # It crashed (or was closed) while we waited: settle the stored row below.
        return await self._close_row(session_id)

    async def _close_row(self, session_id: str) -> dict[str, Any]:
        """Close a session that has no live runtime (crashed, or a stale row): idempotent."""
        row = await self._stored(session_id)
        if row["status"] != "closed":
            closing = {"status": "closed", "closed_at": now_iso()}
            await self.store.update_session(session_id=session_id, **closing)
            row.update(closing)
            self.ctx.bus.publish_session(dict(row))
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
                            live.id, reason=f"closed after {timeout:g} s without executions (idle timeout)"
                        )
                    except errors.DomainError:
                        log.exception("idle close of session %s failed", live.id)

    def abandon(self) -> builtins.list[LiveSession]:
        """Give up every live session without writing anything: this node has lost them (the
        cluster declared it lost, or another process took its id). The caller settles the rows,
        then ends the workers with ``drop``."""
        dropped = list(self.live.values())
        for live in dropped:
            live.closing = True  # a run killed now ends without a rollback or a rebuild
        self.live.clear()
        return dropped

    @staticmethod
    async def drop(dropped: builtins.list[LiveSession]) -> None:
        for live in dropped:
            live.kill()
            await live.end_background("INTERRUPTED")

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
        for task in list(self.ctx.background_tasks):
            task.cancel()
        for live in list(self.live.values()):
            live.closing = True
            live.kill()
            try:
                await live.set_status("closed", closed_at=now_iso(), last_error="closed at server shutdown")
            except errors.StoreError:
                log.exception("could not close session %s at shutdown", live.id)
        self.live.clear()


async def _done() -> None:
    """A start-up with nothing left to do (a fork's worker is ready when it answers)."""
