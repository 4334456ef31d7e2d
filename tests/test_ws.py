"""WebSocket API: live events, lossless resume, session feeds, execute/cancel, errors, origins."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from server.app import create_app
from tests.conftest import Api, slow_reader_session, stored_events

FLOOD = "for (let i = 0; i < {n}; i++) console.log('line ' + i); 'done'"


async def _read_until_complete(ws: Any, sub: str | None = None) -> tuple[list[dict], dict]:
    events: list[dict] = []
    final: dict = {}
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), 60)
        if sub is not None and msg.get("subscription") not in (sub, None):
            continue
        if msg["type"] == "events":
            events.extend(msg["events"])
        elif msg["type"] == "execution":
            final = msg["execution"]
        elif msg["type"] == "complete":
            return events, final
        elif msg["type"] == "error":
            raise AssertionError(msg)


def _assert_complete(events: list[dict], n_console: int, *, repl: bool = True) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), "gap, duplicate or disorder in seq"
    texts = [e["payload"]["text"] for e in events if e["type"] == "console"]
    assert texts == [f"line {i}" for i in range(n_console)]
    assert events[-1]["type"] == "value"
    if repl:
        assert events[0]["type"] == "input_echo"


async def _unlimited_session(api: Any) -> dict:
    return await api.session(cpu_ms=0, wall_ms=0, max_events=0, max_output_kb=0)


async def test_ping_and_malformed_messages_keep_the_socket_open(api):
    ws = await api.client.ws_connect("/api/v1/ws")
    await ws.send_str("not json")
    err = await ws.receive_json()
    assert err["type"] == "error" and err["error"]["code"] == "INVALID_REQUEST"
    await ws.send_json({"type": "launch", "id": 7})
    err = await ws.receive_json()
    assert err == {"type": "error", "reply_to": 7, "error": err["error"]}
    assert err["error"]["code"] == "INVALID_REQUEST"
    await ws.send_json({"type": "subscribe", "id": 8, "execution_id": "nope"})
    err = await ws.receive_json()
    assert err["error"]["code"] == "VALIDATION_ERROR" and err["reply_to"] == 8
    await ws.send_json({"type": "subscribe", "id": 9, "execution_id": "6a1f6a7e-0000-4000-8000-000000000000"})
    err = await ws.receive_json()
    assert err["error"]["code"] == "EXECUTION_NOT_FOUND"
    await ws.send_json({"type": "ping", "id": "p1"})
    assert await ws.receive_json() == {"type": "pong", "reply_to": "p1"}
    await ws.close()


async def test_100k_lines_reach_two_subscribers_complete_and_in_order(api):
    s = await _unlimited_session(api)
    n = 100_000
    r = await api.client.post(
        "/api/v1/executions/repl",
        json={"session_id": s["id"], "input": FLOOD.format(n=n), "wait": False},
    )
    assert r.status == 202
    running = await r.json()
    assert running["status"] == "running"
    subscribers = []
    for _ in range(2):
        ws = await api.client.ws_connect("/api/v1/ws")
        await ws.send_json({"type": "subscribe", "id": 1, "execution_id": running["id"], "after_seq": 0})
        reply = await ws.receive_json()
        assert reply["type"] == "subscribed" and reply["reply_to"] == 1
        subscribers.append(ws)
    results = await asyncio.gather(*(_read_until_complete(ws) for ws in subscribers))
    for events, final in results:
        _assert_complete(events, n)
        assert final["status"] == "ok"
        assert final["metrics"]["event_count"] == n + 2


async def test_first_event_arrives_before_the_execution_ends(api):
    s = await _unlimited_session(api)
    ws = await api.client.ws_connect("/api/v1/ws")
    code = "console.log('first'); await new Promise(r => setTimeout(r, 300)); 'end'"
    await ws.send_json({"type": "execute", "id": 1, "session_id": s["id"], "input": code})
    accepted = await ws.receive_json()
    assert accepted["type"] == "accepted" and accepted["execution"]["status"] == "running"
    seen_console_while_running = False
    while True:
        msg = await ws.receive_json()
        if msg["type"] == "events" and any(e["type"] == "console" for e in msg["events"]):
            ex = await (await api.client.get(f"/api/v1/executions/{accepted['execution']['id']}")).json()
            seen_console_while_running = ex["status"] == "running"
        if msg["type"] == "complete":
            break
    assert seen_console_while_running


@pytest.mark.parametrize("lines", [3, 700])
async def test_every_line_logged_before_a_wait_arrives_during_the_wait(api, lines):
    # A burst is batched in the worker; when the code then waits (a long timer), the tail of the
    # burst must go out at once, not when the code logs again or ends.
    s = await _unlimited_session(api)
    ws = await api.client.ws_connect("/api/v1/ws")
    code = f"for (let i = 1; i <= {lines}; i++) console.log(i); await new Promise(r => setTimeout(r, 60000))"
    await ws.send_json({"type": "execute", "id": 1, "session_id": s["id"], "input": code})
    accepted = await ws.receive_json()
    assert accepted["type"] == "accepted"
    seen: list[str] = []
    while len(seen) < lines:
        msg = await asyncio.wait_for(ws.receive_json(), 10)  # far less than the 60 s wait
        if msg["type"] == "events":
            seen += [e["payload"]["text"] for e in msg["events"] if e["type"] == "console"]
    assert seen == [str(i) for i in range(1, lines + 1)]
    ex = await (await api.client.get(f"/api/v1/executions/{accepted['execution']['id']}")).json()
    assert ex["status"] == "running"
    r = await api.client.post(f"/api/v1/executions/{accepted['execution']['id']}/cancel")
    assert (await r.json())["status"] == "cancelled"
    await ws.close()


async def test_disconnect_at_a_random_point_and_resume_loses_nothing(api):
    s = await _unlimited_session(api)
    n = 20_000
    r = await api.client.post(
        "/api/v1/executions/repl", json={"session_id": s["id"], "input": FLOOD.format(n=n), "wait": False}
    )
    exec_id = (await r.json())["id"]
    cut = random.randint(1, n)
    got: list[dict] = []
    ws = await api.client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "subscribe", "id": 1, "execution_id": exec_id, "after_seq": 0})
    assert (await ws.receive_json())["type"] == "subscribed"
    while len(got) < cut:
        msg = await ws.receive_json()
        if msg["type"] == "events":
            got.extend(msg["events"])
        if msg["type"] == "complete":
            break
    await ws.close()
    last_seq = got[-1]["seq"]
    ws = await api.client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "subscribe", "id": 2, "execution_id": exec_id, "after_seq": last_seq})
    assert (await ws.receive_json())["type"] == "subscribed"
    rest, final = await _read_until_complete(ws)
    _assert_complete(got + rest, n)
    assert final["status"] == "ok"


async def test_subscribing_to_an_ended_execution_replays_and_completes(api):
    s = await api.session()
    status, body = await api.repl(s["id"], "console.log('x'); 5")
    ws = await api.client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "subscribe", "id": 1, "execution_id": body["id"]})
    assert (await ws.receive_json())["type"] == "subscribed"
    events, final = await _read_until_complete(ws)
    assert [e["id"] for e in events] == [e["id"] for e in body["events"]]
    assert final["status"] == "ok" and final["result"]["json"] == 5
    # Resuming after the last seq replays nothing but still completes.
    await ws.send_json({"type": "subscribe", "id": 2, "execution_id": body["id"], "after_seq": 3})
    assert (await ws.receive_json())["type"] == "subscribed"
    events, final = await _read_until_complete(ws)
    assert events == [] and final["id"] == body["id"]


async def test_session_subscriber_sees_every_execution_start_and_end(api):
    s = await api.session()
    ws = await api.client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "subscribe", "id": 1, "session_id": s["id"]})
    sub = (await ws.receive_json())["subscription"]
    ids = []
    for code in ("console.log('a'); 1", "2"):
        status, body = await api.repl(s["id"], code)
        ids.append(body["id"])
    starts, ends, events = [], [], []
    while len(ends) < 2:
        msg = await asyncio.wait_for(ws.receive_json(), 10)
        assert msg["subscription"] == sub
        if msg["type"] == "execution":
            (starts if msg["execution"]["status"] == "running" else ends).append(msg["execution"]["id"])
        elif msg["type"] == "events":
            events.extend(msg["events"])
    assert starts == ids and ends == ids
    assert [e["type"] for e in events] == ["input_echo", "console", "value", "input_echo", "value"]


async def test_session_subscription_with_after_id_replays_stored_events_first(api):
    s = await api.session()
    _, first = await api.repl(s["id"], "console.log('one'); 1")
    _, second = await api.repl(s["id"], "console.log('two'); 2")
    after_id = first["events"][0]["id"]
    ws = await api.client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "subscribe", "id": 1, "session_id": s["id"], "after_id": after_id})
    assert (await ws.receive_json())["type"] == "subscribed"
    events: list[dict] = []
    want = [e["id"] for e in first["events"][1:] + second["events"]]
    while len(events) < len(want):
        msg = await asyncio.wait_for(ws.receive_json(), 10)
        if msg["type"] == "events":
            events.extend(msg["events"])
    assert [e["id"] for e in events] == want


async def test_execute_and_run_file_over_the_socket(api, worktree):
    s = await api.session()
    (worktree / "job.js").write_text("console.log('args', __ARGS__.n, __ENV__.MODE); __ARGS__.n * 2")
    ws = await api.client.ws_connect("/api/v1/ws")
    await ws.send_json(
        {
            "type": "run_file",
            "id": "r",
            "session_id": s["id"],
            "path": "./job.js",
            "args": {"n": 21},
            "env": {"MODE": "test"},
        }
    )
    accepted = await ws.receive_json()
    assert accepted["type"] == "accepted" and accepted["reply_to"] == "r"
    assert accepted["execution"]["path"] == "job.js"
    events, final = await _read_until_complete(ws, accepted["subscription"])
    assert [e["type"] for e in events] == ["console", "value"]
    assert events[0]["payload"]["text"] == "args 21 test"
    assert final["result"]["json"] == 42
    await ws.send_json({"type": "run_file", "id": "bad", "session_id": s["id"], "path": "../x.js"})
    err = await ws.receive_json()
    assert err["reply_to"] == "bad" and err["error"]["code"] == "INVALID_PATH"


async def test_busy_session_over_the_socket(api):
    s = await api.session(cpu_ms=0, wall_ms=0)
    ws = await api.client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "execute", "id": 1, "session_id": s["id"], "input": "while(true){}"})
    accepted = await ws.receive_json()
    await ws.send_json({"type": "execute", "id": 2, "session_id": s["id"], "input": "1"})
    while True:
        msg = await ws.receive_json()
        if msg.get("reply_to") == 2:
            break
    assert msg["error"]["code"] == "SESSION_BUSY"
    assert msg["error"]["details"]["running_execution_id"] == accepted["execution"]["id"]
    await ws.send_json({"type": "cancel", "id": 3, "execution_id": accepted["execution"]["id"]})
    while True:
        msg = await ws.receive_json()
        if msg.get("reply_to") == 3:
            break
    assert msg["type"] == "cancelled" and msg["execution"]["status"] == "cancelled"
    assert (await api.value(s["id"], "1+1"))["json"] == 2


async def test_cancel_over_rest_stops_a_busy_loop(api):
    s = await api.session(cpu_ms=0, wall_ms=0)
    r = await api.client.post(
        "/api/v1/executions/repl", json={"session_id": s["id"], "input": "while(true){}", "wait": False}
    )
    assert r.status == 202
    exec_id = (await r.json())["id"]
    r = await api.client.post(f"/api/v1/executions/{exec_id}/cancel")
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "cancelled"
    assert body["error"]["code"] == "CANCELLED"
    events = await stored_events(api.client, exec_id)
    assert events[-1]["type"] == "system" and events[-1]["payload"]["code"] == "CANCELLED"
    assert (await api.value(s["id"], "1+1"))["json"] == 2
    r = await api.client.post(f"/api/v1/executions/{exec_id}/cancel")
    assert r.status == 409 and (await r.json())["error"]["code"] == "EXECUTION_NOT_RUNNING"


async def test_cancel_of_awaiting_code_stops_in_place_and_keeps_state(api):
    s = await api.session(cpu_ms=0, wall_ms=0)
    await api.value(s["id"], "var keep = 'yes'")
    r = await api.client.post(
        "/api/v1/executions/repl",
        json={"session_id": s["id"], "input": "await new Promise(() => {})", "wait": False},
    )
    exec_id = (await r.json())["id"]
    body = await (await api.client.post(f"/api/v1/executions/{exec_id}/cancel")).json()
    assert body["status"] == "cancelled"
    assert (await api.value(s["id"], "keep"))["json"] == "yes"


async def test_foreign_origin_is_refused(api, aiohttp_client, settings):
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await api.client.ws_connect("/api/v1/ws", headers={"Origin": "http://evil.example"})
    assert err.value.status == 403
    # Same host is fine, and a configured origin is allowed.
    host = f"http://{api.client.host}:{api.client.port}"
    ws = await api.client.ws_connect("/api/v1/ws", headers={"Origin": host})
    await ws.close()
    # A second server needs a database of its own (one server per SQLite file).
    own_db = settings.db_url.replace("vm.db", "vm-origins.db")
    other = await aiohttp_client(
        create_app(replace(settings, allowed_origins=("http://ok.example",), db_url=own_db))
    )
    ws = await other.ws_connect("/api/v1/ws", headers={"Origin": "http://ok.example"})
    await ws.close()


async def test_slow_reader_is_closed_with_4008_and_resumes_losslessly(aiohttp_client, settings, worktree):

    client = await aiohttp_client(create_app(replace(settings, ws_queue_bytes=2048)))
    api = Api(client, worktree)
    s = await _unlimited_session(api)
    n = 30_000
    reader = slow_reader_session()
    ws = await reader.ws_connect(client.make_url("/api/v1/ws"))
    await ws.send_json({"type": "subscribe", "id": 1, "session_id": s["id"]})
    assert (await ws.receive_json())["type"] == "subscribed"
    code = "for (let i = 0; i < 30000; i++) console.log('line ' + i + ' ' + 'x'.repeat(200)); 'done'"
    status, body = await api.repl(s["id"], code)
    assert status == 201
    got: list[dict] = []
    closed_code = None
    await asyncio.sleep(1.0)  # a stalled reader: the server's queue for us overflows meanwhile
    while True:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            closed_code = ws.close_code
            break
        data = msg.json()
        if data["type"] == "events":
            got.extend(data["events"])
    await reader.close()
    assert closed_code == 4008
    ws = await client.ws_connect("/api/v1/ws")
    after = got[-1]["seq"] if got else 0
    await ws.send_json({"type": "subscribe", "id": 2, "execution_id": body["id"], "after_seq": after})
    assert (await ws.receive_json())["type"] == "subscribed"
    rest, _ = await _read_until_complete(ws)
    texts = [e["payload"]["text"].split(" ")[1] for e in got + rest if e["type"] == "console"]
    assert texts == [str(i) for i in range(n)]
    assert [e["seq"] for e in got + rest] == list(range(1, n + 3))


@pytest.mark.parametrize("compress", [0, 15])
async def test_each_execution_arrives_whole_and_in_order_with_or_without_compression(api, compress):
    # Frames queued together are written together (one write, server.http.frames) unless the
    # client negotiated compression; either way every message arrives, whole and in order.
    s = await _unlimited_session(api)
    ws = await api.client.ws_connect("/api/v1/ws", compress=compress)
    assert ws.compress == compress
    for i in range(15):
        code = f"for (let j = 0; j < {i}; j++) console.log('line ' + j); {i}"
        await ws.send_json({"type": "execute", "id": i, "session_id": s["id"], "input": code})
        accepted = await asyncio.wait_for(ws.receive_json(), 30)
        assert accepted["type"] == "accepted" and accepted["reply_to"] == i
        assert accepted["execution"]["status"] == "running"
        events, final = await _read_until_complete(ws, accepted["subscription"])
        _assert_complete(events, i)
        assert final["status"] == "ok" and final["result"]["json"] == i
        assert events == await stored_events(api.client, final["id"])
    await ws.close()


def test_text_frames_follow_rfc_6455_for_every_length_class():
    from server.http.frames import text_frames

    cases = ((0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"), (65535, b"\x81\x7e\xff\xff"))
    for n, header in cases:
        payload = b"x" * n
        assert text_frames([payload]) == header + payload
    big = b"y" * 65536
    assert text_frames([big]) == b"\x81\x7f" + (65536).to_bytes(8, "big") + big
    assert text_frames([b"a", b"bc"]) == b"\x81\x01a\x81\x02bc"
