"""One WebSocket connection to the API (API.md section 7), with request/reply routing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from server.client.base import INTERIM_REPLIES, ApiError, _ClosesOnExit


class VmSocket(_ClosesOnExit):
    """One WebSocket connection (API.md section 7).

    A reader task routes every incoming message: a reply whose `reply_to` matches a pending
    `request()` resolves it; everything else is queued for `receive()` / `async for`.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0
        self._pending: dict[int | str, asyncio.Future[dict[str, Any]]] = {}
        self._interim: dict[int | str, Callable[[dict[str, Any]], None]] = {}
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._closed_error: ApiError | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, msg: Mapping[str, Any]) -> int | str:
        """Send one message; an `id` is added when missing. Returns the message's id."""
        data = dict(msg)
        if "id" not in data or data["id"] is None:
            data["id"] = self.next_id()
        if self._closed_error is not None:
            raise self._closed_error
        try:
            await self._ws.send_str(json.dumps(data, ensure_ascii=False))
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ApiError(0, "DISCONNECTED", f"the WebSocket connection is closed: {exc}") from exc
        msg_id: int | str = data["id"]
        return msg_id

    async def request(
        self, msg: Mapping[str, Any], *, on_interim: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Send a message and wait for its reply; an `error` reply raises `ApiError`.

        Interim replies (`queued`) go to `on_interim` and leave the request open.
        Wrap it in `asyncio.timeout()` to bound the wait.
        """
        data = dict(msg)
        if "id" not in data or data["id"] is None:
            data["id"] = self.next_id()
        if self._closed_error is not None:
            raise self._closed_error
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[data["id"]] = future
        self._interim[data["id"]] = on_interim or (lambda _msg: None)
        try:
            await self.send(data)
            reply = await future
        finally:
            self._pending.pop(data["id"], None)
            self._interim.pop(data["id"], None)
        if reply.get("type") == "error":
            raise ApiError.from_envelope(0, reply.get("error"))
        return reply

    async def receive(self) -> dict[str, Any]:
        """The next server message that is not a reply to a `request()`.

        Raises `ApiError` with code `DISCONNECTED` once the connection is closed and every
        queued message has been read.
        """
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # keep reporting the closure to later callers
            assert self._closed_error is not None
            raise self._closed_error
        return item

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Server messages until the connection closes."""
        while True:
            try:
                yield await self.receive()
            except ApiError as exc:
                if exc.code == "DISCONNECTED":
                    return
                raise

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.messages()

    async def follow(self, subscription: Any, *, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Items of one execution subscription until its `complete` message.

        Yields its events in order (those with `seq <= after_seq` or already seen are skipped)
        and the Execution record of its `execution` messages (no `seq`). An `error` message for
        the subscription raises `ApiError`; a closed socket raises it with code `DISCONNECTED`.
        """
        cursor = after_seq
        while True:
            msg = await self.receive()
            if msg.get("subscription") != subscription:
                continue
            kind = msg.get("type")
            if kind == "events":
                for event in msg.get("events") or []:
                    seq = event.get("seq")
                    if isinstance(seq, int):
                        if seq <= cursor:
                            continue
                        cursor = seq
                    yield event
            elif kind == "execution" and isinstance(msg.get("execution"), dict):
                yield msg["execution"]
            elif kind == "complete":
                return
            elif kind == "error":
                raise ApiError.from_envelope(0, msg.get("error"))

    async def close(self) -> None:
        await self._ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read_loop(self) -> None:
        reason = ""
        try:
            async for frame in self._ws:
                if frame.type == aiohttp.WSMsgType.ERROR:
                    reason = f": {self._ws.exception() or 'protocol error'}"
                    break
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(frame.data)
                except ValueError:
                    continue  # not ours to fix; the protocol promises JSON objects
                if not isinstance(data, dict):
                    continue
                reply_to = data.get("reply_to")
                if data.get("type") in INTERIM_REPLIES and reply_to in self._interim:
                    self._interim[reply_to](data)
                    continue
                future = self._pending.pop(reply_to, None) if isinstance(reply_to, int | str) else None
                if future is not None and not future.done():
                    future.set_result(data)
                else:
                    self._queue.put_nowait(data)
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = f": {exc}"
        finally:
            code = self._ws.close_code
            detail = f" (code {code})" if code is not None else ""
            self._closed_error = ApiError(
                0, "DISCONNECTED", f"the WebSocket connection closed{detail}{reason}"
            )
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(self._closed_error)
            self._pending.clear()
            self._queue.put_nowait(None)
