"""The terminal REPL's connection to its session (the event-loop side of `vm-system repl`).

One WebSocket subscribed to the whole session carries everything: the output of the inputs
typed here, and that of the session's background execution (API.md §12: timers left pending by
earlier inputs), which is handed to `on_background` as it comes, between inputs too. Inputs are
sent with `timers: "background"` (when background output can be shown) and `queue: true`, so
input typed while another client runs something waits its turn, as type-ahead does in Node.
Without a WebSocket endpoint the REPL falls back to REST polling, and timers are waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from server.cli.render import ExecutionPrinter
from server.cli.state import CliState
from server.client import ApiError, VmClient, VmSocket

Item = Mapping[str, Any]  # an event (it has `seq`) or an Execution record (it has none)

COMPLETE_TIMEOUT_S = 5.0  # a Tab press must not hang the terminal


class SessionLink:
    """Runs inputs in one session and streams the session's background output."""

    def __init__(
        self,
        state: CliState,
        session_id: str,
        *,
        on_background: Callable[[Item], None],
        on_queued: Callable[[], None],
        background: bool,
    ) -> None:
        self.state = state
        self.session_id = session_id
        self.on_background = on_background
        self.on_queued = on_queued
        self.use_background = background
        self.client: VmClient | None = None
        self.sock: VmSocket | None = None
        self.ws_supported = True
        self.subscription: Any = None
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.background: dict[str, str] = {}  # background execution id -> its status
        self.last_event_id: int | None = None
        self.execution_id: str | None = None
        self.cancel_requested = False

    @property
    def transport(self) -> str:
        return "WebSocket" if self.sock is not None else "REST polling"

    # -- connection ---------------------------------------------------------------------------

    async def open(self) -> dict[str, Any]:
        self.client = self.state.client()
        info = await self.client.get_session(self.session_id)
        self.session_id = str(info.get("id", self.session_id))
        await self._connect()
        return info

    async def _connect(self) -> None:
        assert self.client is not None
        if not self.ws_supported:
            return
        try:
            sock = await self.client.connect_ws()
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.ws_supported = False
            self.sock = None
            return
        subscribe: dict[str, Any] = {"type": "subscribe", "session_id": self.session_id}
        if self.last_event_id is not None:
            subscribe["after_id"] = self.last_event_id  # what was missed while away
        reply = await sock.request(subscribe)
        self.sock, self.subscription = sock, reply.get("subscription")
        self.inbox = asyncio.Queue()
        self.reader = asyncio.get_running_loop().create_task(self._read(sock))
        # A background execution that began before this subscription: its events are known by id.
        for execution in await self.client.list_executions(self.session_id, limit=20):
            if execution.get("kind") == "background" and execution.get("status") == "running":
                self.background.setdefault(str(execution["id"]), "running")

    async def close(self) -> None:
        if self.sock is not None:
            await self.sock.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        if self.client is not None:
            await self.client.close()

    async def _read(self, sock: VmSocket) -> None:
        """Route the session subscription: background output out at once, the rest to `inbox`."""
        async for msg in sock:
            if msg.get("subscription") != self.subscription:
                continue
            kind = msg.get("type")
            if kind == "execution" and isinstance(msg.get("execution"), dict):
                execution = msg["execution"]
                if execution.get("kind") == "background":
                    self.background[str(execution["id"])] = str(execution.get("status"))
                    if execution.get("status") != "running":
                        self.on_background(execution)
                    continue
            elif kind == "events":
                events = msg.get("events") or []
                ids = [e["id"] for e in events if isinstance(e.get("id"), int)]
                if ids:
                    self.last_event_id = max(ids + [self.last_event_id or 0])
                if msg.get("execution_id") in self.background:
                    for event in events:
                        self.on_background(event)
                    continue
            self.inbox.put_nowait(msg)
        self.inbox.put_nowait(None)

    # -- inputs -------------------------------------------------------------------------------

    async def execute(self, source: str, printer: ExecutionPrinter) -> None:
        assert self.client is not None
        if self.ws_supported and (self.sock is None or self.sock.closed):
            await self._connect()
        if self.sock is None:
            execution = await self.client.repl(self.session_id, source, wait=False)
            await self._follow_rest(str(execution["id"]), 0, printer)
            return
        while not self.inbox.empty():  # what other clients ran meanwhile is not ours to print
            self.inbox.get_nowait()
        message: dict[str, Any] = {"type": "execute", "session_id": self.session_id, "input": source}
        message["queue"] = True
        if self.use_background:
            message["timers"] = "background"
        reply = await self.sock.request(message, on_interim=lambda _msg: self.on_queued())
        self.execution_id = str(reply["execution"]["id"])
        # The session subscription carries this execution already: drop the duplicate stream.
        with contextlib.suppress(ApiError):
            await self.sock.send({"type": "unsubscribe", "subscription": reply.get("subscription")})
        if self.cancel_requested:
            await self.cancel()
        cursor = 0
        try:
            cursor = await self._drain(self.execution_id, printer)
        except ApiError as exc:
            if exc.code != "DISCONNECTED":
                raise
            # The socket dropped mid-execution: follow the rest from the cursor, reconnect later.
            await self._follow_rest(self.execution_id, cursor, printer)

    async def _drain(self, execution_id: str, printer: ExecutionPrinter) -> int:
        """Print this execution's events from `inbox` until its end (returns the last seq)."""
        assert self.client is not None
        cursor = 0
        while True:
            msg = await self.inbox.get()
            if msg is None:
                raise ApiError(0, "DISCONNECTED", "the WebSocket connection closed")
            if msg.get("type") == "events" and msg.get("execution_id") == execution_id:
                for event in msg.get("events") or []:
                    if event.get("seq", 0) > cursor:
                        cursor = event["seq"]
                        printer.event(event)
            elif msg.get("type") == "execution" and msg["execution"].get("id") == execution_id:
                execution = msg["execution"]
                if execution.get("status") == "running":
                    continue
                # Anything stored but not yet seen here comes first (the end is the last word).
                count = (execution.get("metrics") or {}).get("event_count")
                if isinstance(count, int) and count > cursor:
                    for event in await self.client.get_events(execution_id, after_seq=cursor, limit=10_000):
                        cursor = event["seq"]
                        printer.event(event)
                printer.final(execution)
                return cursor

    async def _follow_rest(self, execution_id: str, cursor: int, printer: ExecutionPrinter) -> None:
        assert self.client is not None
        self.execution_id = execution_id
        if self.cancel_requested:
            await self.cancel()
        async for item in self.client.follow_execution(execution_id, cursor):
            (printer.event if "seq" in item else printer.final)(item)

    async def cancel(self, execution_id: str | None = None) -> None:
        """Cancel the running input (or `execution_id`); an execution already ended is fine."""
        target = execution_id or self.execution_id
        if target is None:
            return
        assert self.client is not None
        try:
            if self.sock is not None and not self.sock.closed:
                await self.sock.request({"type": "cancel", "execution_id": target})
            else:
                await self.client.cancel_execution(target)
        except ApiError as exc:
            if exc.code not in ("EXECUTION_NOT_RUNNING", "DISCONNECTED"):
                raise

    async def stop_timers(self) -> int:
        """Cancel the running background execution (clears its timers); how many were stopped."""
        running = [eid for eid, status in self.background.items() if status == "running"]
        for eid in running:
            await self.cancel(eid)
        return len(running)

    async def complete(self, source: str, cursor: int) -> dict[str, Any]:
        """Completions at `cursor` (API.md §12), answered even while the session is busy."""
        assert self.client is not None
        async with asyncio.timeout(COMPLETE_TIMEOUT_S):
            if self.sock is not None and not self.sock.closed:
                message = {"type": "complete", "session_id": self.session_id, "input": source}
                return await self.sock.request({**message, "cursor": cursor})
            return await self.client.complete(self.session_id, source, cursor)
