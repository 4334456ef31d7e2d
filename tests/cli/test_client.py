"""The client library (`server.client`): API errors, following executions, the socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server.client import ApiError, VmClient
from tests.cli.support import (
    LiveServer,
    open_session,
)

# -- the client library -----------------------------------------------------------------------


async def test_client_raises_api_errors_with_status_code_and_details(
    server: LiveServer, worktree: Path
) -> None:
    async with VmClient(server.url) as client:
        sid = await open_session(client, worktree)
        with pytest.raises(ApiError) as missing:
            await client.get_session("00000000-0000-4000-8000-000000000000")
        assert (missing.value.status, missing.value.code) == (404, "SESSION_NOT_FOUND")

        running = await client.repl(sid, "await new Promise(r => setTimeout(r, 60000))", wait=False)
        try:
            with pytest.raises(ApiError) as busy:
                await client.repl(sid, "1")
            assert (busy.value.status, busy.value.code) == (409, "SESSION_BUSY")
            assert busy.value.details["running_execution_id"] == running["id"]
        finally:
            cancelled = await client.cancel_execution(running["id"])
        assert cancelled["status"] == "cancelled"


async def test_follow_execution_yields_events_then_the_record(server: LiveServer, worktree: Path) -> None:
    async with VmClient(server.url) as client:
        sid = await open_session(client, worktree)
        execution = await client.repl(sid, 'console.log("a"); console.log("b"); 3', wait=False)
        items = [item async for item in client.follow_execution(execution["id"])]
        assert [i.get("type") for i in items[:-1]] == ["input_echo", "console", "console", "value"]
        assert [i["seq"] for i in items[:-1]] == [1, 2, 3, 4]
        assert items[-1]["id"] == execution["id"] and items[-1]["status"] == "ok"

        resumed = [i async for i in client.follow_execution(execution["id"], after_seq=2)]
        assert [i.get("seq") for i in resumed] == [3, 4, None]


async def test_socket_requests_get_their_own_replies(server: LiveServer, worktree: Path) -> None:
    async with VmClient(server.url) as client:
        sid = await open_session(client, worktree)
        sock = await client.connect_ws()
        async with sock:
            pong = await sock.request({"type": "ping"})
            assert pong["type"] == "pong"
            with pytest.raises(ApiError) as unknown:
                await sock.request(
                    {"type": "subscribe", "execution_id": "00000000-0000-4000-8000-000000000000"}
                )
            assert unknown.value.code == "EXECUTION_NOT_FOUND"
            assert unknown.value.status == 404

            accepted = await sock.request({"type": "execute", "session_id": sid, "input": "6*7"})
            assert accepted["type"] == "accepted"
            items = [i async for i in sock.follow(accepted["subscription"])]
            value = [i for i in items if i.get("type") == "value"]
            assert value[0]["payload"]["preview"] == "42"
            assert items[-1]["status"] == "ok"


async def test_follow_execution_resumes_after_a_dropped_socket(
    server: LiveServer, worktree: Path, aiohttp_server: Any
) -> None:
    """Fault injection: a proxy drops the first WebSocket right after it relays some events."""
    connections: list[int] = []

    async def ws_proxy(request: web.Request) -> web.WebSocketResponse:
        connections.append(len(connections) + 1)
        first = len(connections) == 1
        downstream = web.WebSocketResponse()
        await downstream.prepare(request)
        async with aiohttp.ClientSession() as http, http.ws_connect(server.url + "/api/v1/ws") as upstream:

            async def forward_requests() -> None:
                async for msg in downstream:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await upstream.send_str(msg.data)

            pump = asyncio.ensure_future(forward_requests())
            async for msg in upstream:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                await downstream.send_str(msg.data)
                if first and json.loads(msg.data).get("type") == "events":
                    break  # the fault: the connection dies mid-stream
            pump.cancel()
        await downstream.close()
        return downstream

    async def rest_proxy(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as http,
            http.request(request.method, server.url + request.path_qs, data=await request.read()) as resp,
        ):
            return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/ws", ws_proxy)
    app.router.add_route("*", "/{tail:.*}", rest_proxy)
    proxy = await aiohttp_server(app)

    async with VmClient(str(proxy.make_url("")).rstrip("/")) as client:
        sid = await open_session(client, worktree)
        code = (
            "for (let i = 0; i < 5; i++) { console.log('line', i);"
            " await new Promise(r => setTimeout(r, 30)); } 'end'"
        )
        execution = await client.repl(sid, code, wait=False)
        items = [item async for item in client.follow_execution(execution["id"])]

    events, final = items[:-1], items[-1]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    texts = [e["payload"]["text"] for e in events if e["type"] == "console"]
    assert texts == [f"line {i}" for i in range(5)]
    assert events[-1]["type"] == "value" and events[-1]["payload"]["preview"] == "end"
    assert final["status"] == "ok"
    assert len(connections) >= 2  # it reconnected and resumed from its cursor
