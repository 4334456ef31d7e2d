"""Execution service: REPL and run-file requests, history, event cursors and cancel."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from typing import Any

from server import errors
from server.core.params import parse_int, parse_uuid
from server.core.paths import clean_relative_path, read_worktree_file
from server.core.schemas import ReplRequest, RunFileRequest
from server.core.sessions import SessionService
from server.events import event_json
from server.pipeline.executions import ExecOutcome, ExecRequest
from server.store.store import Store

MAX_EXECUTIONS_PAGE = 1000
MAX_EVENTS_PAGE = 10000


def _check_source(source: str, what: str) -> None:
    # QuickJS takes source text as a C string: a NUL would silently cut the program short.
    if "\x00" in source:
        raise errors.ValidationError(f"{what} contains a NUL character, which JavaScript source cannot carry")


class ExecutionService:
    def __init__(self, store: Store, sessions: SessionService) -> None:
        self.store = store
        self.sessions = sessions
        self.pipeline = sessions.pipeline

    async def repl(
        self,
        body: ReplRequest,
        *,
        on_queued: Callable[[], None] | None = None,
        on_start: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecOutcome:
        if not body.session_id.strip():
            raise errors.ValidationError("session_id is required")
        if not body.input:
            raise errors.ValidationError("input is required")
        _check_source(body.input, "input")
        live = await self.sessions.require_live_id(body.session_id)
        req = ExecRequest(
            kind="repl",
            source=body.input,
            input=body.input,
            wait=body.wait,
            timers=body.timers,
            queue=body.queue,
            on_queued=on_queued,
            on_start=on_start,
        )
        return self._check(await self.pipeline.submit(live, req))

    async def run_file(
        self,
        body: RunFileRequest,
        *,
        on_queued: Callable[[], None] | None = None,
        on_start: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecOutcome:
        if not body.session_id.strip():
            raise errors.ValidationError("session_id is required")
        if not body.path.strip():
            raise errors.ValidationError("path is required")
        live = await self.sessions.require_live_id(body.session_id)
        path = clean_relative_path(body.path)
        # Every check happens before an execution row exists.
        source = await asyncio.to_thread(
            read_worktree_file,
            live.worktree,
            path,
            max_bytes=self.sessions.settings.max_file_bytes,
            session_id=live.id,
        )
        _check_source(source, f"file {path!r}")
        req = ExecRequest(
            kind="run_file",
            source=source,
            path=path,
            args=body.args,
            env=body.env,
            wait=body.wait,
            queue=body.queue,
            on_queued=on_queued,
            on_start=on_start,
        )
        return self._check(await self.pipeline.submit(live, req))

    @staticmethod
    def _check(outcome: ExecOutcome) -> ExecOutcome:
        ex = outcome.execution
        if outcome.failed_operation:
            raise errors.StoreError(
                outcome.failed_operation, execution_id=ex["id"], session_id=ex["session_id"]
            )
        err = ex.get("error") or {}
        if ex["status"] == "error" and err.get("code") == "OUTPUT_LIMIT_EXCEEDED":
            raise errors.OutputLimitExceeded(
                err["message"], execution_id=ex["id"], session_id=ex["session_id"]
            )
        return outcome

    async def get(self, raw_id: str) -> dict[str, Any]:
        execution_id = parse_uuid(raw_id, "execution")
        row = await self.store.get_execution(execution_id=execution_id)
        if row is None:
            raise errors.ExecutionNotFound(
                f"execution {execution_id} does not exist", execution_id=execution_id
            )
        return row

    async def list(
        self, raw_session_id: str | None, raw_limit: str | None, raw_before: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        if not raw_session_id:
            raise errors.ValidationError("session_id query parameter is required")
        session_id = parse_uuid(raw_session_id, "session")
        limit = parse_int(raw_limit, "limit", default=50, lo=1, hi=MAX_EXECUTIONS_PAGE)
        before = None if raw_before is None else parse_uuid(raw_before, "before execution")
        await self.sessions.get(session_id)
        rows = await self.store.list_executions(session_id=session_id, limit=limit, before=before)
        if rows is None:
            raise errors.ValidationError(
                f"before={before} is not an execution of session {session_id}; pass the id of the "
                "last execution of the previous page",
                field="before",
            )
        return rows

    async def events(
        self, raw_id: str, raw_after: str | None, raw_limit: str | None
    ) -> builtins.list[dict[str, Any]]:
        execution_id = parse_uuid(raw_id, "execution")
        after = parse_int(raw_after, "after_seq", default=0, lo=0, hi=None)
        limit = parse_int(raw_limit, "limit", default=1000, lo=1, hi=MAX_EVENTS_PAGE)
        rows = await self.store.list_events(execution_id=execution_id, after_seq=after, limit=limit)
        if not rows:
            await self.get(execution_id)  # 404 for an unknown execution, [] otherwise
        return [event_json(r) for r in rows]

    async def cancel(self, raw_id: str) -> dict[str, Any]:
        execution_id = parse_uuid(raw_id, "execution")
        outcome = await self.pipeline.cancel(execution_id)
        ended = outcome.execution if outcome is not None else await self.get(execution_id)
        if outcome is None or ended["status"] != "cancelled":
            # It was not running, or it ended on its own (a value, a limit) before the cancel
            # could take effect: either way this cancel did not stop it.
            raise errors.ExecutionNotRunning(
                f"execution {execution_id} already ended with status {ended['status']}",
                execution_id=execution_id,
                status=ended["status"],
            )
        return ended
