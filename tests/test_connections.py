"""Connection-level defenses through real sockets: header deadline, connection cap, framing errors.

The server runs with the runner `vm-system serve` uses (``server.http.transport``), on a real
port; the clients are raw sockets that stall, flood and send broken HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server.app import create_app
from server.config import Settings
from server.http.transport import make_runner
from tests.conftest import Api, free_port, slow_reader_session


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[int]:
    port = free_port()
    runner = make_runner(create_app(dataclasses.replace(settings, listen=f"127.0.0.1:{port}")), settings)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()


def _envelope(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head, head
    return status, json.loads(body)


@pytest.mark.parametrize(
    "request_bytes, words",
    [
        (b"GARBAGE\r\n\r\n", "Invalid method"),
        (b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n", "header"),
        (b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", "8190"),
        (
            b"POST /api/v1/templates HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "chunk",
        ),
        (
            b"POST /api/v1/templates HTTP/1.1\r\nHost: localhost\r\nContent-Encoding: br\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            "content-encoding",
        ),
    ],
    ids=["request-line", "header", "oversized-header", "chunking", "encoding"],
)
async def test_framing_errors_answer_the_json_envelope(settings, request_bytes, words):
    async with serving(settings) as port:
        status, body = _envelope(await _exchange(port, request_bytes))
        assert status == 400
        assert body["error"]["code"] == "INVALID_REQUEST"
        assert words.lower() in body["error"]["message"].lower()
        assert "Traceback" not in body["error"]["message"]


async def test_slow_headers_are_cut_off_and_idle_keepalive_is_not(settings):
    async with serving(dataclasses.replace(settings, header_timeout_s=1.0)) as port:
        # Half a request head, then nothing: the server says why and closes.
        raw = await _exchange(port, b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n")
        status, body = _envelope(raw)
        assert status == 408 and body["error"]["code"] == "REQUEST_TIMEOUT"
        # A connection that sends nothing at all is closed too.
        assert await _exchange(port, b"") == b""
        # A head trickled in byte by byte is cut off although bytes keep coming.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100_000
        cut_off = False
        for byte in head:  # 100 s of trickle at most; the deadline is 1 s
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                cut_off = True
                break
            if reader.at_eof():
                cut_off = True
                break
            await asyncio.sleep(0.001)
        writer.close()
        assert cut_off
        # Between requests a keep-alive connection may idle past the deadline: only a started
        # head is on the clock.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"
        for _ in range(2):
            writer.write(request)
            line = await asyncio.wait_for(reader.readline(), 60)
            assert line.startswith(b"HTTP/1.1 200"), line
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            await reader.readexactly(len(b'{"status":"ok"}'))
            await asyncio.sleep(2.5)
        writer.close()


async def test_connections_past_the_cap_are_refused_and_open_ones_keep_working(settings):
    cap = 20
    async with serving(dataclasses.replace(settings, max_connections=cap)) as port:
        url = f"http://127.0.0.1:{port}/api/v1/health"
        # One keep-alive connection, opened before the flood.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
            assert (await http.get(url)).status == 200
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(cap - 1)]
            status, body = _envelope(await _exchange(port, b"GET /api/v1/health HTTP/1.1\r\n\r\n"))
            assert status == 503 and body["error"]["code"] == "TOO_MANY_CONNECTIONS"
            assert str(cap) in body["error"]["message"]
            for _ in range(3):  # the connection that was already open is still served
                r = await http.get(url)
                assert r.status == 200 and await r.json() == {"status": "ok"}
            for _, writer in idle:
                writer.close()

            async def admitted() -> bool:
                raw = await _exchange(
                    port, b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                return raw.startswith(b"HTTP/1.1 200")

            for _ in range(600):
                if await admitted():
                    break
                await asyncio.sleep(0.1)
            assert await admitted()


async def test_a_stalled_websocket_reader_is_bounded_in_bytes(aiohttp_client, settings, worktree):
    # Few, large frames: a bound in frames would hold them all; the bound in bytes does not.
    client = await aiohttp_client(create_app(dataclasses.replace(settings, ws_queue_bytes=256 * 1024)))
    api = Api(client, worktree)
    s = await api.session(cpu_ms=0, wall_ms=0, max_events=0, max_output_kb=0)
    reader = slow_reader_session()
    ws = await reader.ws_connect(client.make_url("/api/v1/ws"), max_msg_size=0)
    await ws.send_json({"type": "subscribe", "id": 1, "session_id": s["id"]})
    assert (await ws.receive_json())["type"] == "subscribed"
    # 400 lines of 50 KB (20 MB), each committed and published in its own small batch.
    code = "for (let i = 0; i < 400; i++) console.log(i + ' ' + 'x'.repeat(50000)); 'done'"
    status, _ = await api.repl(s["id"], code)
    assert status == 201
    closed_code = None
    while True:  # the reader wakes only now: everything since is either queued or dropped
        msg = await asyncio.wait_for(ws.receive(), 60)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            closed_code = msg.data
            break
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
    await reader.close()
    assert closed_code == 4008
    assert (await api.value(s["id"], "1 + 1"))["json"] == 2
