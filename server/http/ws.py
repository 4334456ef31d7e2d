"""The WebSocket endpoint: the transport for feeds, execute/run_file/cancel, ping.

Each connection is an adapter over the services: it parses and dispatches messages in order,
and is the ``Sink`` of its feeds (``server.pipeline.feeds`` holds the lossless backlog-to-live
protocol). Outbound frames go through an outbox bounded in bytes; a client that cannot keep up
is closed with 4008 and can resume from its cursor because everything it missed is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from server import errors
from server.config import Settings
from server.core.params import message_cursor, message_str, parse_uuid
from server.core.schemas import CompleteRequest, ReplRequest, RunFileRequest
from server.http.decode import validate_fields
from server.http.forward import FORWARDER, Forwarder, Peer
from server.http.frames import text_frames
from server.http.keys import SERVICES
from server.http.routes import EXTRA_ROUTES
from server.pipeline.feeds import ExecutionFeed, Feed, SessionFeed
from server.services import Services

log = logging.getLogger(__name__)

REPL_PATH = "/api/v1/executions/repl"
RUN_FILE_PATH = "/api/v1/executions/run-file"

CLOSE_TOO_SLOW = 4008
_CLOSE_SLOW = b"\x00close"
CLOSE_WAIT_S = 10.0
HUB = web.AppKey("ws_hub", weakref.WeakSet)
CONNECTIONS = web.AppKey("ws_connections", weakref.WeakSet)  # live Connection objects (metrics)


class Outbox:
    """Outbound frames, bounded in bytes (not frames: one frame may carry thousands of events)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: deque[bytes | None] = deque()
        self.size = 0
        self.closed = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()

    def _fits(self, frame: bytes) -> bool:
        # An empty outbox takes any frame, so one large frame never stalls a reader for ever.
        return not self.frames or self.size + len(frame) <= self.limit

    def put_nowait(self, frame: bytes) -> bool:
        """Queue ``frame``; False when it would pass the limit."""
        if not self._fits(frame):
            return False
        self._append(frame)
        return True

    async def put(self, frame: bytes) -> None:
        """Queue ``frame``, waiting for the reader to make room (returns at once once closed)."""
        while not self.closed and not self._fits(frame):
            self._room.clear()
            await self._room.wait()
        if not self.closed:
            self._append(frame)

    def end(self, last: bytes | None) -> None:
        """Drop what is queued, queue ``last`` (a close marker) and wake every waiting writer."""
        self.closed = True
        self.frames.clear()
        self.size = 0
        self.frames.append(last)
        self._ready.set()
        self._room.set()

    def _append(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.size += len(frame)
        self._ready.set()

    async def get_all(self) -> list[bytes | None]:
        """Everything queued, once there is something (a close marker always comes alone)."""
        while not self.frames:
            self._ready.clear()
            await self._ready.wait()
        frames = list(self.frames)
        self.frames.clear()
        self.size = 0
        self._room.set()
        return frames


class Connection:
    """One socket: the outbox and its sender, the ordered inbox, and the feeds it follows.

    It is the feeds' ``Sink``: they push messages, it serialises and queues them.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        services: Services,
        settings: Settings,
        forwarder: Forwarder | None = None,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport  # the request's, for frames written together
        self.services = services
        self.forwarder = forwarder  # a cluster: messages about other nodes' sessions go there
        self.source = services.feeds
        self.outbox = Outbox(settings.ws_queue_bytes)
        self.feeds: dict[str, Feed] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self._next_sub = 0
        # Messages are handled one at a time, in the order they arrive (so a subscribe followed
        # by an unsubscribe works, and subscription ids follow message order); only a cancel,
        # which waits for its execution to end, runs beside them.
        self.inbox: asyncio.Queue[tuple[Any, Any, dict[str, Any]]] = asyncio.Queue()
        self._spawn(self._consume())

    # -- outbound (the Sink) -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.outbox.closed

    def push(self, msg: dict[str, Any]) -> None:
        if not self.closed and not self.outbox.put_nowait(orjson.dumps(msg)):
            self.too_slow()

    async def push_wait(self, msg: dict[str, Any]) -> None:
        if not self.closed:
            await self.outbox.put(orjson.dumps(msg))

    def too_slow(self) -> None:
        if self.closed:
            return
        log.info("closing a WebSocket client that cannot keep up (4008)")
        # Drop what is queued (the client resumes from its cursor) and let the sender close.
        self.outbox.end(_CLOSE_SLOW)
        self._end_feeds()

    async def sender(self) -> bool:
        """Send queued frames until the end; True when the end is "too slow" (close with 4008).

        What is queued together goes out together: one write for all of it (``frames``) when
        the socket has nothing pending and no compression was negotiated; otherwise frame by
        frame through aiohttp, which compresses and waits for a slow reader.
        """
        ws = self.ws
        while True:
            frames = await self.outbox.get_all()
            first = frames[0]
            if first is None or ws.closed:
                return False
            if first is _CLOSE_SLOW:
                return True
            transport = self.transport
            if (
                len(frames) > 1
                and not ws.compress
                and transport is not None
                and not transport.is_closing()
                and transport.get_write_buffer_size() == 0
            ):
                transport.write(text_frames(frames))  # type: ignore[arg-type]
                continue
            for frame in frames:
                await ws.send_frame(frame, WSMsgType.TEXT)  # type: ignore[arg-type]

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
            "complete": self.complete,
        }.get(kind)  # type: ignore[arg-type]
        if handler is None:
            what = "message has no type" if kind is None else f"unknown message type {kind!r}"
            return self.error(
                msg_id,
                errors.InvalidRequest(
                    f"{what}; expected subscribe, unsubscribe, execute, run_file, cancel, complete or ping"
                ),
            )
        # A cancel and a completion answer at once, whatever else is going on; a queued
        # execution waits for its session without holding up the messages behind it.
        if kind in ("cancel", "complete") or (kind in ("execute", "run_file") and msg.get("queue") is True):
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

    def _forget(self, feed: Feed) -> None:
        self.feeds.pop(feed.id, None)

    async def subscribe(self, msg_id: Any, msg: dict[str, Any]) -> None:
        if "execution_id" in msg:
            execution_id = parse_uuid(message_str(msg, "execution_id"), "execution")
            after_seq = message_cursor(msg, "after_seq") or 0
            record = await self.services.executions.get(execution_id)
            await self._follow_execution(record, after_seq, {"type": "subscribed", "reply_to": msg_id})
        elif "session_id" in msg:
            session_id = parse_uuid(message_str(msg, "session_id"), "session")
            after_id = message_cursor(msg, "after_id")
            await self.services.sessions.get(session_id)
            feed = SessionFeed(self.source, self, self._sub_id(), session_id, after_id, self._forget)
            self.feeds[feed.id] = feed
            await feed.open({"type": "subscribed", "reply_to": msg_id, "subscription": feed.id})
        else:
            raise errors.ValidationError("subscribe needs execution_id or session_id")

    async def _follow_execution(self, record: dict[str, Any], after_seq: int, reply: dict[str, Any]) -> None:
        feed = ExecutionFeed(self.source, self, self._sub_id(), record, after_seq, self._forget)
        self.feeds[feed.id] = feed
        await feed.open({**reply, "subscription": feed.id})

    async def unsubscribe(self, msg_id: Any, msg: dict[str, Any]) -> None:
        feed = self.feeds.get(message_str(msg, "subscription"))
        if feed is None:
            raise errors.NotFound(f"no subscription {msg.get('subscription')!r} on this socket")
        feed.close()
        self.reply(msg_id, {"type": "unsubscribed", "subscription": feed.id})

    async def _session_peer(self, session_id: str) -> Peer | None:
        """The node holding this session, when it is not this one (a cluster)."""
        return None if self.forwarder is None else await self.forwarder.session_peer(session_id)

    async def execute(self, msg_id: Any, msg: dict[str, Any]) -> None:
        body = validate_fields(_body_of(msg, ("session_id", "input", "timers", "queue")), ReplRequest)
        on_queued = self._queued(msg_id, body.session_id)
        if (peer := await self._session_peer(body.session_id)) is not None:
            await self._accepted(msg_id, await peer.start_execution(REPL_PATH, body, on_queued))
            return
        start = _FollowFromStart(self, msg_id)
        outcome = await self.services.executions.repl(body, on_queued=on_queued, on_start=start)
        if not start.attached:
            await self._accepted(msg_id, outcome.execution)

    async def run_file(self, msg_id: Any, msg: dict[str, Any]) -> None:
        keys = ("session_id", "path", "args", "env", "queue")
        body = validate_fields(_body_of(msg, keys), RunFileRequest)
        on_queued = self._queued(msg_id, body.session_id)
        if (peer := await self._session_peer(body.session_id)) is not None:
            await self._accepted(msg_id, await peer.start_execution(RUN_FILE_PATH, body, on_queued))
            return
        start = _FollowFromStart(self, msg_id)
        outcome = await self.services.executions.run_file(body, on_queued=on_queued, on_start=start)
        if not start.attached:
            await self._accepted(msg_id, outcome.execution)

    def _queued(self, msg_id: Any, session_id: str) -> Callable[[], None]:
        """Tell the client at once that its execution waits for the session (then: accepted)."""
        return lambda: self.reply(msg_id, {"type": "queued", "session_id": session_id})

    async def complete(self, msg_id: Any, msg: dict[str, Any]) -> None:
        body = validate_fields({k: msg[k] for k in ("input", "cursor") if k in msg}, CompleteRequest)
        session_id = message_str(msg, "session_id")
        if (peer := await self._session_peer(session_id)) is not None:
            path = f"/api/v1/sessions/{session_id.strip()}/complete"
            found = await peer.call("POST", path, body.model_dump(exclude_none=True))
        else:
            found = await self.services.sessions.complete(session_id, body.input, body.cursor)
        self.reply(msg_id, {"type": "completions", **found})

    async def _accepted(self, msg_id: Any, execution: dict[str, Any]) -> None:
        reply = {"type": "accepted", "reply_to": msg_id, "execution": execution}
        await self._follow_execution(execution, 0, reply)

    def _follow_from_start(self, msg_id: Any, execution: dict[str, Any]) -> None:
        """Accept and follow an execution that is starting now: no event of it is published
        yet, so the feed goes live at once, with nothing stored to read first."""
        feed = ExecutionFeed(self.source, self, self._sub_id(), execution, 0, self._forget)
        self.feeds[feed.id] = feed
        feed.attach({"type": "accepted", "reply_to": msg_id, "execution": execution, "subscription": feed.id})

    async def cancel(self, msg_id: Any, msg: dict[str, Any]) -> None:
        execution_id = message_str(msg, "execution_id")
        peer = None if self.forwarder is None else await self.forwarder.execution_peer(execution_id)
        if peer is not None:
            execution = await peer.call("POST", f"/api/v1/executions/{execution_id.strip()}/cancel", None)
        else:
            execution = await self.services.executions.cancel(execution_id)
        self.reply(msg_id, {"type": "cancelled", "execution": execution})

    def _end_feeds(self) -> None:
        for feed in list(self.feeds.values()):
            feed.close()

    async def close(self) -> None:
        self._end_feeds()
        for task in list(self.tasks):
            task.cancel()
        if not self.closed:
            self.outbox.end(None)


async def _read(ws: web.WebSocketResponse, conn: Connection) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            conn.handle_text(msg.data)
        elif msg.type == WSMsgType.BINARY:
            conn.error(None, errors.InvalidRequest("binary frames are not supported"))


class _FollowFromStart:
    """An execute/run_file request's ``on_start``: accepted and followed from the first event."""

    def __init__(self, conn: Connection, msg_id: Any) -> None:
        self.conn = conn
        self.msg_id = msg_id
        self.attached = False

    def __call__(self, execution: dict[str, Any]) -> None:
        if not self.conn.closed:
            self.conn._follow_from_start(self.msg_id, execution)
            self.attached = True


def _body_of(msg: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The request fields of an execute/run_file message, validated like a REST body."""
    return {**{k: msg[k] for k in keys if k in msg}, "wait": False}


def setup(app: web.Application, settings: Settings) -> None:
    hub: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[HUB] = hub
    connections: weakref.WeakSet[Connection] = weakref.WeakSet()
    app[CONNECTIONS] = connections

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_s, max_msg_size=1 << 20)
        await ws.prepare(request)
        hub.add(ws)
        conn = Connection(
            ws,
            request.app[SERVICES],
            settings,
            request.app.get(FORWARDER),
            request.transport,  # type: ignore[arg-type]
        )
        connections.add(conn)
        sending = asyncio.create_task(conn.sender())
        reading = asyncio.create_task(_read(ws, conn))
        too_slow = False
        try:
            await asyncio.wait((sending, reading), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Stop reading first: a close from this task, with no reader beside it, waits for
            # the client's close reply, so the client sees a clean 4008 (not a dropped line).
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            await conn.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                too_slow = await asyncio.wait_for(sending, CLOSE_WAIT_S)
        if too_slow and not ws.closed:
            await ws.close(code=CLOSE_TOO_SLOW, message=b"too slow: resume from your cursor")
        return ws

    async def close_all(app: web.Application) -> None:
        for ws in list(hub):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server going away")

    app.router.add_get("/api/v1/ws", ws_handler)
    app.on_shutdown.append(close_all)
    app[EXTRA_ROUTES] = (("/api/v1/ws", "GET", "WebSocket: live events, execute, cancel"),)
