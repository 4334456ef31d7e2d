"""The WebSocket endpoint: subscriptions with lossless resume, execute/run_file/cancel, ping.

Each connection is an adapter over the services (it holds no state of its own beyond its
subscriptions). A subscription registers with the event bus *before* it reads the stored
backlog and buffers live events meanwhile; after the backlog it drains the buffer, skipping
what it already sent (by ``seq`` for an execution, by event ``id`` for a session). Outbound
frames go through a bounded queue; a client that cannot keep up is closed with 4008 and can
resume from its cursor because everything it missed is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import WSMsgType, web

from server import errors
from server.config import Settings
from server.core.schemas import ReplRequest, RunFileRequest
from server.core.templates import parse_uuid
from server.events import EventTuple, events_array, runs_by_execution
from server.http.decode import validate_fields
from server.http.keys import SERVICES
from server.http.middleware import error_response
from server.http.rest import EXTRA_ROUTES
from server.services import Services

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 4008
_CLOSE_SLOW = b"\x00close"
CLOSE_WAIT_S = 10.0
BACKLOG_PAGE = 5000
HUB = web.AppKey("ws_hub", weakref.WeakSet)


class Subscription:
    """One execution or session subscription of one connection."""

    def __init__(
        self, conn: Connection, sub_id: str, *, execution_id: str | None, session_id: str | None, cursor: int
    ) -> None:
        self.conn = conn
        self.id = sub_id
        self.execution_id = execution_id
        self.session_id = session_id
        self.cursor = cursor  # last seq (execution) or last event id (session) sent
        self.live = False  # False while the backlog is being read
        # Everything the bus delivered while the backlog was being read, in arrival order:
        # ("ev", execution_id, session_id, rows) or ("msg", message).
        self.buffer: list[tuple[Any, ...]] = []
        self.done = False

    # -- bus callbacks (event loop thread) --------------------------------------------

    def on_events(self, execution_id: str, session_id: str, rows: Sequence[EventTuple]) -> None:
        if self.done:
            return
        if not self.live:
            self.buffer.append(("ev", execution_id, session_id, rows))
            return
        frame = self.frame(execution_id, session_id, rows)
        if frame is not None:
            self.conn.push(frame)

    def on_execution(self, execution: dict[str, Any]) -> None:
        if self.done:
            return
        if self.execution_id is not None and execution["status"] == "running":
            return  # execution subscribers hear only the end
        msg = {"type": "execution", "subscription": self.id, "execution": execution}
        if not self.live:
            self.buffer.append(("msg", msg))
            return
        self.conn.push(msg)
        if self.execution_id is not None:
            self.finish()

    def on_session(self, session: dict[str, Any]) -> None:
        if self.done:
            return
        msg = {"type": "session", "subscription": self.id, "session": session}
        if not self.live:
            self.buffer.append(("msg", msg))
        else:
            self.conn.push(msg)

    # -- helpers -----------------------------------------------------------------------

    def _fresh(self, rows: Sequence[EventTuple | tuple[Any, ...]]) -> list[Any]:
        key = 2 if self.execution_id is not None else 0  # seq for executions, id for sessions
        cursor = self.cursor
        first = int(rows[0][key])
        if first > cursor:
            fresh = list(rows)
        else:
            fresh = [r for r in rows if int(r[key]) > cursor]
        if fresh:
            self.cursor = int(fresh[-1][key])
        return fresh

    def frame(self, execution_id: str, session_id: str, rows: Sequence[Any]) -> dict[str, Any] | None:
        """An ``events`` frame with the rows past the cursor (None when nothing is new)."""
        fresh = self._fresh(rows)
        if not fresh:
            return None
        return {
            "type": "events",
            "subscription": self.id,
            "execution_id": execution_id,
            "session_id": session_id,
            "events": events_array(fresh),
        }

    def finish(self) -> None:
        self.conn.push({"type": "complete", "subscription": self.id})
        self.conn.drop(self)

    def detach(self) -> None:
        self.done = True
        bus = self.conn.services.bus
        if self.execution_id is not None:
            bus.unsubscribe_execution(self.execution_id, self)
        if self.session_id is not None and self.execution_id is None:
            bus.unsubscribe_session(self.session_id, self)


class Connection:
    def __init__(self, ws: web.WebSocketResponse, services: Services, settings: Settings) -> None:
        self.ws = ws
        self.services = services
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=settings.ws_queue_frames)
        self.subs: dict[str, Subscription] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self._next_sub = 0
        # Messages are handled one at a time, in the order they arrive (so a subscribe followed
        # by an unsubscribe works, and subscription ids follow message order); only a cancel,
        # which waits for its execution to end, runs beside them.
        self.inbox: asyncio.Queue[tuple[Any, Any, dict[str, Any]]] = asyncio.Queue()
        self._spawn(self._consume())

    # -- outbound ----------------------------------------------------------------------

    def push(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(orjson.dumps(msg))
        except asyncio.QueueFull:
            self.too_slow()

    async def push_wait(self, msg: dict[str, Any]) -> None:
        if not self.closed:
            await self.queue.put(orjson.dumps(msg))

    def too_slow(self) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("closing a WebSocket client that cannot keep up (4008)")
        # Drop what is queued (the client resumes from its cursor) and let the sender close.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_CLOSE_SLOW)
        for sub in list(self.subs.values()):
            self.drop(sub)

    async def sender(self) -> None:
        ws = self.ws
        while True:
            frame = await self.queue.get()
            if frame is None or ws.closed:
                return
            if frame is _CLOSE_SLOW:
                await ws.close(code=CLOSE_TOO_SLOW, message=b"too slow: resume from your cursor")
                return
            await ws.send_str(frame.decode())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def reply(self, msg_id: Any, payload: dict[str, Any]) -> None:
        self.push({**payload, "reply_to": msg_id})

    def error(self, msg_id: Any, exc: errors.DomainError) -> None:
        self.push({"type": "error", "reply_to": msg_id, "error": exc.envelope()["error"]})

    # -- inbound -----------------------------------------------------------------------

    def handle_text(self, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return self.error(None, errors.InvalidRequest(f"message is not valid JSON: {exc}"))
        if not isinstance(msg, dict):
            return self.error(None, errors.InvalidRequest("message must be a JSON object"))
        msg_id = msg.get("id")
        kind = msg.get("type")
        if kind == "ping":
            return self.reply(msg_id, {"type": "pong"})
        handler = {
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "execute": self.execute,
            "run_file": self.run_file,
            "cancel": self.cancel,
        }.get(kind)  # type: ignore[arg-type]
        if handler is None:
            what = "message has no type" if kind is None else f"unknown message type {kind!r}"
            return self.error(
                msg_id,
                errors.InvalidRequest(
                    f"{what}; expected subscribe, unsubscribe, execute, run_file, cancel or ping"
                ),
            )
        if kind == "cancel":
            self._spawn(self._guarded(handler, msg_id, msg))
        else:
            self.inbox.put_nowait((handler, msg_id, msg))

    async def _consume(self) -> None:
        while True:
            handler, msg_id, msg = await self.inbox.get()
            await self._guarded(handler, msg_id, msg)

    async def _guarded(self, handler: Any, msg_id: Any, msg: dict[str, Any]) -> None:
        try:
            await handler(msg_id, msg)
        except errors.DomainError as exc:
            self.error(msg_id, exc)
        except Exception:  # noqa: BLE001 - the socket stays open
            log.exception("WebSocket message %r failed", msg.get("type"))
            self.error(msg_id, errors.Internal("internal error while handling the message"))

    def _sub_id(self) -> str:
        self._next_sub += 1
        return f"s{self._next_sub}"

    async def subscribe(self, msg_id: Any, msg: dict[str, Any]) -> None:
        if "execution_id" in msg:
            execution_id = parse_uuid(_str(msg, "execution_id"), "execution")
            after = _int(msg, "after_seq")
            record = await self.services.executions.get(execution_id)
            await self.follow_execution(msg_id, record, after, reply_type="subscribed")
        elif "session_id" in msg:
            session_id = parse_uuid(_str(msg, "session_id"), "session")
            after = _int(msg, "after_id")
            await self.services.sessions.get(session_id)
            await self.follow_session(msg_id, session_id, after)
        else:
            raise errors.ValidationError("subscribe needs execution_id or session_id")

    async def follow_execution(
        self,
        msg_id: Any,
        record: dict[str, Any],
        after_seq: int,
        *,
        reply_type: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        execution_id, session_id = record["id"], record["session_id"]
        sub = Subscription(self, self._sub_id(), execution_id=execution_id, session_id=None, cursor=after_seq)
        self.subs[sub.id] = sub
        self.services.bus.subscribe_execution(execution_id, sub)
        self.reply(msg_id, {"type": reply_type, "subscription": sub.id, **(extra or {})})
        await self._send_backlog(sub, session_id)
        if await self._go_live(sub) or sub.done:
            return
        if record["status"] == "running":
            record = await self.services.executions.get(execution_id)
        if record["status"] != "running" and not sub.done:
            # It ended before we registered, or while we read: its last batch may have been
            # committed after our read but published before we registered, so read once more.
            sub.live = False
            await self._send_backlog(sub, session_id)
            await self._go_live(sub)
            if not sub.done:
                await self.push_wait({"type": "execution", "subscription": sub.id, "execution": record})
                await self.push_wait({"type": "complete", "subscription": sub.id})
                self.drop(sub)

    async def _send_backlog(self, sub: Subscription, session_id: str) -> None:
        """Stored events of the subscription's execution past its cursor, page by page."""
        assert sub.execution_id is not None
        while not sub.done:
            rows = await self.services.store.list_events(
                execution_id=sub.execution_id, after_seq=sub.cursor, limit=BACKLOG_PAGE
            )
            frame = sub.frame(sub.execution_id, session_id, rows) if rows else None
            if frame is not None:
                await self.push_wait(frame)
            if len(rows) < BACKLOG_PAGE:
                return

    async def _go_live(self, sub: Subscription) -> bool:
        """Send what the bus delivered during the backlog, in order, then go live.

        Uses blocking pushes (the backlog is ours to pace); returns True if the subscription
        completed on the way (its execution ended).
        """
        while sub.buffer:
            item = sub.buffer.pop(0)
            if item[0] == "ev":
                frame = sub.frame(item[1], item[2], item[3])
                if frame is not None:
                    await self.push_wait(frame)
                continue
            await self.push_wait(item[1])
            if item[1]["type"] == "execution" and sub.execution_id is not None:
                await self.push_wait({"type": "complete", "subscription": sub.id})
                self.drop(sub)
                return True
        sub.live = True  # no await since the buffer was seen empty: nothing slips between
        return False

    async def follow_session(self, msg_id: Any, session_id: str, after_id: int | None) -> None:
        sub = Subscription(
            self, self._sub_id(), execution_id=None, session_id=session_id, cursor=after_id or 0
        )
        self.subs[sub.id] = sub
        self.services.bus.subscribe_session(session_id, sub)
        self.reply(msg_id, {"type": "subscribed", "subscription": sub.id})
        if after_id is not None:
            store = self.services.store
            while not sub.done:
                rows = await store.list_session_events(
                    session_id=session_id, after_id=sub.cursor, limit=BACKLOG_PAGE
                )
                for exec_id, run in runs_by_execution(rows):  # one frame per execution run
                    frame = sub.frame(exec_id, session_id, run)
                    if frame is not None:
                        await self.push_wait(frame)
                if len(rows) < BACKLOG_PAGE:
                    break
        else:
            sub.cursor = 0
        await self._go_live(sub)

    async def unsubscribe(self, msg_id: Any, msg: dict[str, Any]) -> None:
        sub = self.subs.get(_str(msg, "subscription"))
        if sub is None:
            raise errors.NotFound(f"no subscription {msg.get('subscription')!r} on this socket")
        self.drop(sub)
        self.reply(msg_id, {"type": "unsubscribed", "subscription": sub.id})

    def drop(self, sub: Subscription) -> None:
        sub.detach()
        self.subs.pop(sub.id, None)

    async def execute(self, msg_id: Any, msg: dict[str, Any]) -> None:
        body = validate_fields(_body_of(msg, ("session_id", "input")), ReplRequest)
        outcome = await self.services.executions.repl(body)
        await self._accepted(msg_id, outcome.execution)

    async def run_file(self, msg_id: Any, msg: dict[str, Any]) -> None:
        body = validate_fields(_body_of(msg, ("session_id", "path", "args", "env")), RunFileRequest)
        outcome = await self.services.executions.run_file(body)
        await self._accepted(msg_id, outcome.execution)

    async def _accepted(self, msg_id: Any, execution: dict[str, Any]) -> None:
        await self.follow_execution(
            msg_id, execution, 0, reply_type="accepted", extra={"execution": execution}
        )

    async def cancel(self, msg_id: Any, msg: dict[str, Any]) -> None:
        execution = await self.services.executions.cancel(_str(msg, "execution_id"))
        self.reply(msg_id, {"type": "cancelled", "execution": execution})

    async def close(self) -> None:
        for sub in list(self.subs.values()):
            self.drop(sub)
        for task in list(self.tasks):
            task.cancel()
        if not self.closed:
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)


def _str(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value.strip():
        raise errors.ValidationError(f"{key} is required and must be a string")
    return value


def _int(msg: dict[str, Any], key: str) -> Any:
    value = msg.get(key)
    if value is None:
        return 0 if key == "after_seq" else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.ValidationError(f"{key} must be a non-negative integer")
    return value


def _body_of(msg: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The request fields of an execute/run_file message, validated like a REST body."""
    return {**{k: msg[k] for k in keys if k in msg}, "wait": False}


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return True  # not a browser: programs and the CLI send no Origin
    if "*" in allowed or origin in allowed:
        return True
    return urlsplit(origin).netloc.lower() == (request.host or "").lower()


def setup(app: web.Application, settings: Settings) -> None:
    hub: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[HUB] = hub

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        if not origin_allowed(request, settings.allowed_origins):
            return error_response(
                errors.Forbidden(
                    f"WebSocket origin {request.headers.get('Origin')!r} is not allowed; "
                    "start the server with --allowed-origins to permit it"
                )
            )
        ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_s, max_msg_size=1 << 20)
        await ws.prepare(request)
        hub.add(ws)
        conn = Connection(ws, request.app[SERVICES], settings)
        sender = asyncio.create_task(conn.sender())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    conn.handle_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.error(None, errors.InvalidRequest("binary frames are not supported"))
        finally:
            await conn.close()
            if not sender.done():
                # Give a pending close frame (4008) a moment to go out before tearing down.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(sender), CLOSE_WAIT_S)
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        return ws

    async def close_all(app: web.Application) -> None:
        for ws in list(hub):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server going away")

    app.router.add_get("/api/v1/ws", ws_handler)
    app.on_shutdown.append(close_all)
    app[EXTRA_ROUTES] = (("/api/v1/ws", "GET", "WebSocket: live events, execute, cancel"),)
