"""One live runtime and its WebSocket, on either side: a vm-system session or a Jupyter kernel.

Both offer ``open(server)``, ``execute(code) -> Outcome`` and ``close()``, so the workloads are
written once. An execution ends where a user sees it end:

- vm-system: ``execute`` on ``/api/v1/ws`` (docs/api.md section 7) until its ``complete``
  message; output lines are ``console`` events, the value is the ``value`` event's preview.
- Jupyter: ``execute_request`` on ``/api/kernels/{id}/channels`` (the JSON kernel WebSocket
  protocol that JupyterLab and Notebook speak, messaging spec 5.3) until both its
  ``execute_reply`` and the kernel's ``status: idle`` for it have arrived; output lines are the
  newlines of ``stream`` stdout messages, the value is the ``execute_result``'s text/plain.
  The messages are built here (a header, a content): ``jupyter_client`` lives in the peer
  environment, not in the bench's, and it would only fill in the same five header fields.

The client is the same for both: aiohttp (which sets TCP_NODELAY on its own sockets) and orjson.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from servers import Server

WS_LIMITS: dict[str, Any] = {"heartbeat": None, "max_msg_size": 0, "autoping": True}
LINGER_MAX_S = 60.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the Deno kernel colours its text/plain values


@dataclass
class Outcome:
    """One execution as the client saw it (times in seconds from sending the request)."""

    seconds: float
    first_line: float | None
    last_line: float | None
    lines: int
    value: str
    notices: list[str]  # what the server said besides the output (Jupyter's rate-limit warnings)
    late_lines: int = 0  # Jupyter, with ``linger``: output lines after the end (not in ``lines``)
    late_value: str = ""  # and the value, when it came then


class ExecutionFailed(RuntimeError):
    pass


class VmSession:
    """A vm-system session (from the server's unlimited template) and a WebSocket to drive it."""

    def __init__(self, server: Server, session_id: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.server = server
        self.session_id = session_id
        self.ws = ws
        self._next = 0

    @classmethod
    async def open(cls, server: Server) -> VmSession:
        body = {
            "template_id": server.template_id,
            "workspace_id": "peers",
            "base_commit_oid": "0" * 40,
            "worktree_path": str(server.worktree),
        }
        async with server.http.post(server.url + "/api/v1/sessions", json=body) as resp:
            data = await resp.json()
            if resp.status != 201:
                raise ExecutionFailed(f"POST /api/v1/sessions answered {resp.status}: {data}")
        ws = await server.http.ws_connect(server.url + "/api/v1/ws", **WS_LIMITS)
        return cls(server, data["id"], ws)

    async def execute(self, code: str, *, linger: float = 0.0, until: str = "") -> Outcome:
        """Run ``code`` until its ``complete`` message (nothing of it comes later: ``linger`` and
        ``until`` are accepted for the common interface and have nothing to wait for)."""
        self._next += 1
        msg = {"type": "execute", "id": self._next, "session_id": self.session_id, "input": code}
        t0 = time.perf_counter()
        await self.ws.send_str(orjson.dumps(msg).decode())
        first = last = None
        lines = 0
        value = ""
        while True:
            frame = await self.ws.receive()
            if frame.type != aiohttp.WSMsgType.TEXT:
                raise ExecutionFailed(f"the vm-system WebSocket closed: {frame.type!r} {frame.data!r}")
            data = orjson.loads(frame.data)
            kind = data["type"]
            if kind == "events":
                for event in data["events"]:
                    etype = event["type"]
                    if etype == "console":
                        lines += 1
                        last = time.perf_counter() - t0
                        if first is None:
                            first = last
                    elif etype == "value":
                        value = event["payload"]["preview"]
                    elif etype == "exception":
                        raise ExecutionFailed(f"{code[:40]!r}: {event['payload']['message']}")
            elif kind == "complete":
                return Outcome(time.perf_counter() - t0, first, last, lines, value, [])
            elif kind == "error":
                raise ExecutionFailed(f"{code[:40]!r}: {data['error']}")

    async def close(self) -> None:
        await self.ws.close()
        url = f"{self.server.url}/api/v1/sessions/{self.session_id}/close"
        async with self.server.http.post(url) as resp:
            await resp.read()


class JupyterKernel:
    """A kernel started through jupyter_server's REST API and its channels WebSocket."""

    def __init__(
        self, server: Server, kernel_id: str, session: str, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        self.server = server
        self.kernel_id = kernel_id
        self.session = session  # the client's session id (messaging spec), also in the WS URL
        self.ws = ws

    @classmethod
    async def open(cls, server: Server) -> JupyterKernel:
        url = server.url + "/api/kernels"
        async with server.http.post(url, json={"name": server.kernel_name}, headers=server.headers) as resp:
            data = await resp.json()
            if resp.status != 201:
                raise ExecutionFailed(f"POST /api/kernels answered {resp.status}: {data}")
        kernel_id = data["id"]
        session = uuid.uuid4().hex
        ws_url = f"{server.url}/api/kernels/{kernel_id}/channels?session_id={session}"
        ws = await server.http.ws_connect(ws_url, headers=server.headers, **WS_LIMITS)
        return cls(server, kernel_id, session, ws)

    def _message(self, code: str) -> tuple[str, bytes]:
        msg_id = uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "bench",
                "session": self.session,
                "date": datetime.now(UTC).isoformat(),
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,  # what JupyterLab sends for a cell
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }
        return msg_id, orjson.dumps(msg)

    async def execute(self, code: str, *, linger: float = 0.0, until: str = "") -> Outcome:
        """Run ``code``; the outcome as of its ``execute_reply`` and ``status: idle``.

        With ``linger``, keep reading afterwards until nothing of this execution has come for
        ``linger`` seconds, or until the outcome has its ``until`` ("value" or "first_line"),
        and report what came late (``late_lines``, ``late_value``; ``first_line`` and
        ``last_line`` include it): the Deno kernel publishes most of a loop's output, and
        sometimes its result, after its idle status, where a client that ends an execution
        there, as JupyterLab does, no longer shows it.
        """
        msg_id, payload = self._message(code)
        state = _Progress(msg_id, time.perf_counter())
        await self.ws.send_str(payload.decode())
        while not (state.replied and state.idle):
            state.feed(await self._receive())
        outcome = state.outcome(time.perf_counter())
        late = _Progress(msg_id, state.t0)
        deadline = time.monotonic() + LINGER_MAX_S
        while linger and time.monotonic() < deadline:
            if until and (getattr(outcome, until) or getattr(late, until)):
                break
            try:
                async with asyncio.timeout(linger):
                    while not late.feed(await self._receive()):
                        pass
            except TimeoutError:
                break
        outcome.late_lines, outcome.late_value = late.lines, late.value
        outcome.first_line = outcome.first_line or late.first_line
        outcome.last_line = late.last_line or outcome.last_line
        outcome.notices += late.notices
        if state.error:
            raise ExecutionFailed(f"{code[:40]!r}: {state.error}")
        return outcome

    async def _receive(self) -> dict[str, Any]:
        frame = await self.ws.receive()
        if frame.type != aiohttp.WSMsgType.TEXT:
            raise ExecutionFailed(f"the kernel WebSocket closed: {frame.type!r} {frame.data!r}")
        data: dict[str, Any] = orjson.loads(frame.data)
        return data

    async def close(self) -> None:
        await self.ws.close()
        url = f"{self.server.url}/api/kernels/{self.kernel_id}"
        async with self.server.http.delete(url, headers=self.server.headers) as resp:
            await resp.read()


class _Progress:
    """What the messages of one execution (by the id of its request) have said so far."""

    def __init__(self, msg_id: str, t0: float) -> None:
        self.msg_id = msg_id
        self.t0 = t0
        self.first_line: float | None = None
        self.last_line: float | None = None
        self.lines = 0
        self.value = ""
        self.notices: list[str] = []
        self.error = ""
        self.replied = self.idle = False

    def feed(self, data: dict[str, Any]) -> bool:
        """Take one message into account; whether it belonged to this execution."""
        if data["parent_header"].get("msg_id") != self.msg_id:
            return False  # a reply to the server's own kernel_info requests, or a late one
        kind = data["header"]["msg_type"]
        content = data["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                self.lines += content["text"].count("\n")
                self.last_line = time.perf_counter() - self.t0
                if self.first_line is None:
                    self.first_line = self.last_line
            else:  # the server's rate-limit warnings come as stderr
                self.notices.append((content["text"].strip().splitlines() or [""])[0])
        elif kind == "execute_result":
            self.value = ANSI.sub("", content["data"].get("text/plain", ""))
        elif kind == "error":
            self.error = f"{content['ename']}: {content['evalue']}"
        elif kind == "status":
            self.idle = content["execution_state"] == "idle"
        elif kind == "execute_reply":
            self.replied = True
            if content["status"] != "ok":
                self.error = self.error or f"{content.get('ename')}: {content.get('evalue')}"
        return True

    def outcome(self, now: float) -> Outcome:
        return Outcome(now - self.t0, self.first_line, self.last_line, self.lines, self.value, self.notices)


Kernel = VmSession | JupyterKernel


async def open_kernel(server: Server) -> Kernel:
    if server.kind == "vm-system":
        return await VmSession.open(server)
    return await JupyterKernel.open(server)
