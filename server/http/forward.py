"""Forwarding to the node that holds a session (API.md §14): the one place requests cross nodes.

``core.directory`` decides where a request belongs; this module carries it there with aiohttp's
client. A REST request is replayed on the owner as it came (method, path, query, body) with this
node's token and the same ``X-Request-Id``, and the owner's status and body go back to the
client unchanged. A WebSocket ``execute``/``run_file``/``cancel``/``complete`` becomes the
matching REST call on the owner; its answer (or its error envelope) becomes the socket's reply,
and the execution's events then reach the socket through the cluster's live events. A node that
cannot reach the owner answers ``503 NODE_UNAVAILABLE`` naming it.

Forwarded requests carry ``X-VM-Forwarded-By``: the owner answers them itself, never forwards
them again (no loops, even when nodes disagree for a moment about where a session lives).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from pydantic import BaseModel

from server import errors
from server.config import Settings
from server.core.directory import Directory, Remote
from server.http.keys import FORWARDED_BY
from server.http.middleware import REQUEST_ID

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONNECT_TIMEOUT_S = 5.0


class Forwarder:
    def __init__(self, settings: Settings, directory: Directory) -> None:
        self.settings = settings
        self.directory = directory
        self.node_id = settings.effective_node_id
        self.counts: Counter[tuple[str, str]] = Counter()  # (transport, outcome) -> requests
        self._http: aiohttp.ClientSession | None = None
        # Requests on their way to each node, given up when the cluster declares it lost.
        self._inflight: dict[str, set[asyncio.Future[tuple[int, bytes, str]]]] = {}

    async def start(self) -> None:
        # No total timeout: a forwarded REPL lasts as long as its execution (wall_ms may be 0).
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _headers(self, request_id: str) -> dict[str, str]:
        headers = {FORWARDED_BY: self.node_id, "X-Request-Id": request_id}
        if self.settings.token:  # the nodes of a cluster share one token
            headers["Authorization"] = f"Bearer {self.settings.token}"
        return headers

    async def _send(
        self, transport: str, remote: Remote, method: str, path_qs: str, body: bytes, request_id: str
    ) -> tuple[int, bytes, str]:
        """The owner's answer (status, body, content type), or NodeUnavailable."""
        call = asyncio.ensure_future(self._request(remote, method, path_qs, body, request_id))
        pending = self._inflight.setdefault(remote.node_id, set())
        pending.add(call)
        try:
            answer = await call
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our own caller went away
            self.counts[(transport, "unreachable")] += 1
            raise errors.NodeUnavailable(
                f"node {remote.node_id} holds this session and was declared lost while this "
                "request was on its way there; its sessions are crashed",
                node_id=remote.node_id,
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.counts[(transport, "unreachable")] += 1
            reason = str(exc) or type(exc).__name__
            log.warning("node %s (%s) cannot be reached: %s", remote.node_id, remote.url, reason)
            raise errors.NodeUnavailable(
                f"node {remote.node_id} holds this session but cannot be reached ({reason}); "
                "try again, or wait until the cluster declares it lost",
                node_id=remote.node_id,
            ) from None
        finally:
            pending.discard(call)
        self.counts[(transport, "ok" if answer[0] < 500 else "error")] += 1
        return answer

    async def _request(
        self, remote: Remote, method: str, path_qs: str, body: bytes, request_id: str
    ) -> tuple[int, bytes, str]:
        assert self._http is not None, "forwarder is not started"
        headers = {**self._headers(request_id), "Content-Type": "application/json"}
        async with self._http.request(method, remote.url + path_qs, data=body, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type", "application/json")

    def node_down(self, node_id: str, status: str) -> None:
        """The cluster declared ``node_id`` lost (or it stopped): stop waiting for its answers."""
        if status == "lost":
            for call in list(self._inflight.get(node_id, ())):
                call.cancel()

    # -- REST ----------------------------------------------------------------------------

    async def proxy(self, request: web.Request, remote: Remote) -> web.Response:
        """Replay ``request`` on ``remote``; its answer, unchanged."""
        body = await request.read()
        status, data, content_type = await self._send(
            "rest", remote, request.method, request.path_qs, body, request[REQUEST_ID]
        )
        return web.Response(body=data, status=status, headers={"Content-Type": content_type})

    async def locate(self, request: web.Request, how: str) -> Remote | None:
        match how:
            case "session":
                return await self.directory.session_owner(request.match_info.get("session_id"))
            case "close":
                return await self.directory.session_owner(request.match_info.get("session_id"), closing=True)
            case "execution":
                return await self.directory.execution_owner(request.match_info.get("execution_id"))
            case "body":
                try:
                    decoded = orjson.loads(await request.read())
                except orjson.JSONDecodeError:
                    return None  # the local handler answers with the right 400
                session_id = decoded.get("session_id") if isinstance(decoded, dict) else None
                return await self.directory.session_owner(session_id)
            case "placement":
                return await self.directory.placement()
        raise ValueError(f"unknown forwarding rule {how!r}")

    # -- WebSocket messages ----------------------------------------------------------------

    async def session_peer(self, session_id: str) -> Peer | None:
        """The node to send a message about this session to (None: answer here)."""
        remote = await self.directory.session_owner(session_id)
        return None if remote is None else Peer(self, remote)

    async def execution_peer(self, execution_id: str) -> Peer | None:
        remote = await self.directory.execution_owner(execution_id)
        return None if remote is None else Peer(self, remote)

    async def call(self, remote: Remote, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """A REST call on ``remote`` for a WebSocket message: the answer, or its error raised."""
        request_id = str(uuid.uuid4())
        payload = b"" if body is None else orjson.dumps(body)
        status, data, _ = await self._send("ws", remote, method, path, payload, request_id)
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            decoded = None
        if status >= 400:
            error = decoded.get("error") if isinstance(decoded, dict) else None
            if not isinstance(error, dict):
                raise errors.Internal(f"node {remote.node_id} answered {status} without an error body")
            raise errors.Forwarded(status, error)
        return decoded

    async def start_execution(
        self, remote: Remote, path: str, body: BaseModel, on_queued: Callable[[], None] | None
    ) -> dict[str, Any]:
        """``execute``/``run_file`` on the owner: the running execution record.

        A queued message is first sent unqueued, so that this node can tell the client it waits
        (``queued``) exactly when the owner's session is busy, as a local one would.
        """
        fields = {**body.model_dump(), "wait": False}
        if fields.get("queue"):
            try:
                return await self.call(remote, "POST", path, {**fields, "queue": False})  # type: ignore[no-any-return]
            except errors.Forwarded as exc:
                if exc.code != "SESSION_BUSY":
                    raise
            if on_queued is not None:
                on_queued()
        return await self.call(remote, "POST", path, fields)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Peer:
    """The node a WebSocket message is about, and the REST calls that stand for the message."""

    forwarder: Forwarder
    remote: Remote

    async def call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        return await self.forwarder.call(self.remote, method, path, body)

    async def start_execution(
        self, path: str, body: BaseModel, on_queued: Callable[[], None] | None
    ) -> dict[str, Any]:
        return await self.forwarder.start_execution(self.remote, path, body, on_queued)


def forwarding(handler: Handler, how: str) -> Handler:
    """``handler``, answering on the session's node when it lives on another one."""

    @functools.wraps(handler)
    async def forwarded(request: web.Request) -> web.StreamResponse:
        forwarder = request.app.get(FORWARDER)
        if forwarder is None or FORWARDED_BY in request.headers:
            return await handler(request)
        remote = await forwarder.locate(request, how)
        if remote is None:
            return await handler(request)
        return await forwarder.proxy(request, remote)

    return forwarded


FORWARDER = web.AppKey("forwarder", Forwarder)
