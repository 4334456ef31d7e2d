"""REPL conveniences (API.md §12): background timers, queueing, `_`, completion, full values,
console.clear and console.table, through real HTTP and WebSocket connections."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import eventually, expect_error, history, stored_events


async def _background(client: Any, session_id: str) -> dict[str, Any] | None:
    runs = [e for e in await history(client, session_id) if e["kind"] == "background"]
    return runs[0] if runs else None


async def _ended(client: Any, exec_id: str) -> dict[str, Any] | None:
    ex = await (await client.get(f"/api/v1/executions/{exec_id}")).json()
    return ex if ex["status"] != "running" else None


# ---------------------------------------------------------------------------- background timers


async def test_timers_keep_running_in_the_background_execution(api: Any, client: Any) -> None:
    s = await api.session()
    status, body = await api.repl(
        s["id"],
        "var n = 0; var h = setInterval(() => console.log('tick', ++n), 20); 'started'",
        timers="background",
    )
    # The execution ends as soon as its value is there; the timer lives on.
    assert status == 201 and body["status"] == "ok" and body["result"]["json"] == "started"
    bg = await eventually(lambda: _background(client, s["id"]))
    assert bg["status"] == "running" and bg["input"] is None

    async def ticks() -> list[str] | None:
        lines = [
            e["payload"]["text"] for e in await stored_events(client, bg["id"]) if e["type"] == "console"
        ]
        return lines if len(lines) >= 3 else None

    lines = await eventually(ticks)
    assert lines[:3] == ["tick 1", "tick 2", "tick 3"]
    # New executions run between the callbacks (the lock is not held) and see their effects.
    assert (await api.value(s["id"], "n"))["json"] >= 3
    # No timer left: the background execution ends ok with a closing note.
    await api.value(s["id"], "clearInterval(h)")
    ended = await eventually(lambda: _ended(client, bg["id"]))
    assert ended["status"] == "ok" and ended["kind"] == "background"
    events = await stored_events(client, bg["id"])
    assert events[-1]["type"] == "system" and "no background timers" in events[-1]["payload"]["message"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_the_default_still_waits_for_timers(api: Any, client: Any) -> None:
    s = await api.session()
    status, body = await api.repl(s["id"], "setTimeout(() => console.log('late'), 50); 'value'")
    assert body["status"] == "ok"
    assert [e["payload"].get("text") for e in body["events"] if e["type"] == "console"] == ["late"]
    assert await _background(client, s["id"]) is None


async def test_cancel_clears_the_background_timers(api: Any, client: Any) -> None:
    s = await api.session()
    await api.repl(s["id"], "var beats = 0; setInterval(() => beats++, 10); 1", timers="background")
    bg = await eventually(lambda: _background(client, s["id"]))
    r = await client.post(f"/api/v1/executions/{bg['id']}/cancel")
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "cancelled" and body["error"]["code"] == "CANCELLED"
    first = (await api.value(s["id"], "beats"))["json"]
    await asyncio.sleep(0.1)
    assert (await api.value(s["id"], "beats"))["json"] == first  # no timer runs any more
    await expect_error(
        await client.post(f"/api/v1/executions/{bg['id']}/cancel"), 409, "EXECUTION_NOT_RUNNING"
    )


async def test_a_spinning_callback_is_killed_and_the_session_rolls_back(api: Any, client: Any) -> None:
    s = await api.session(cpu_ms=200, wall_ms=10_000)
    await api.value(s["id"], "var kept = 'here'")
    await api.repl(s["id"], "setTimeout(() => { while (true) {} }, 30); 'armed'", timers="background")
    bg = await eventually(lambda: _background(client, s["id"]))
    ended = await eventually(lambda: _ended(client, bg["id"]))
    assert ended["status"] == "timeout" and ended["error"]["code"] == "CPU_LIMIT_EXCEEDED"
    last = (await stored_events(client, bg["id"]))[-1]
    assert last["payload"]["state"] == "rolled_back"
    assert (await api.value(s["id"], "kept"))["json"] == "here"
    assert (await api.get_session(s["id"]))["runtime_meta"]["rollbacks"] == 1


async def test_output_limits_apply_to_the_background_execution(api: Any, client: Any) -> None:
    s = await api.session(max_events=5)
    await api.repl(s["id"], "setInterval(() => console.log('x'), 1); 0", timers="background")
    bg = await eventually(lambda: _background(client, s["id"]))
    ended = await eventually(lambda: _ended(client, bg["id"]))
    assert ended["status"] == "error" and ended["error"]["code"] == "OUTPUT_LIMIT_EXCEEDED"
    assert len(await stored_events(client, bg["id"])) <= 5
    assert (await api.value(s["id"], "1 + 1"))["json"] == 2


async def test_session_subscribers_see_the_background_execution(api: Any, client: Any) -> None:
    s = await api.session()
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "subscribe", "id": 1, "session_id": s["id"]})
    assert (await ws.receive_json())["type"] == "subscribed"
    await ws.send_json(
        {
            "type": "execute",
            "id": 2,
            "session_id": s["id"],
            "timers": "background",
            "input": "let k = 0; const t = setInterval(() => {"
            " console.log('bg', ++k); if (k === 3) clearInterval(t) }, 10)",
        }
    )
    kinds: list[tuple[str, str]] = []
    texts: list[str] = []
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), 20)
        if msg["type"] == "execution":
            kinds.append((msg["execution"]["kind"], msg["execution"]["status"]))
            if msg["execution"]["kind"] == "background" and msg["execution"]["status"] != "running":
                break
        elif msg["type"] == "events":
            texts += [e["payload"]["text"] for e in msg["events"] if e["type"] == "console"]
    assert ("background", "running") in kinds and ("background", "ok") in kinds
    assert texts == ["bg 1", "bg 2", "bg 3"]
    await ws.close()


# ---------------------------------------------------------------------------- queueing


async def test_queued_executions_run_in_arrival_order(api: Any, client: Any) -> None:
    s = await api.session(wall_ms=20_000)
    await api.value(s["id"], "var order = []")
    first = await client.post(
        "/api/v1/executions/repl",
        json={
            "session_id": s["id"],
            "input": "await new Promise(r => setTimeout(r, 300)); order.push(1)",
            "wait": False,
        },
    )
    assert first.status == 202
    # Without "queue" a busy session answers at once, as before.
    await expect_error(
        await client.post("/api/v1/executions/repl", json={"session_id": s["id"], "input": "order.push(0)"}),
        409,
        "SESSION_BUSY",
    )

    async def queued(n: int) -> dict[str, Any]:
        status, body = await api.repl(s["id"], f"order.push({n}); order.length", queue=True)
        assert status == 201, body
        return body

    second = asyncio.create_task(queued(2))
    await asyncio.sleep(0.05)
    third = asyncio.create_task(queued(3))
    results = await asyncio.gather(second, third)
    assert [r["result"]["json"] for r in results] == [2, 3]
    assert (await api.value(s["id"], "order"))["json"] == [1, 2, 3]


async def test_a_queued_websocket_execute_is_told_it_waits(api: Any, client: Any) -> None:
    s = await api.session(wall_ms=20_000)
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json(
        {
            "type": "execute",
            "id": 1,
            "session_id": s["id"],
            "input": "await new Promise(r => setTimeout(r, 300))",
        }
    )
    await ws.send_json({"type": "execute", "id": 2, "session_id": s["id"], "input": "'after'", "queue": True})
    # A message behind the queued one is answered at once.
    await ws.send_json({"type": "ping", "id": 3})
    seen: list[tuple[str, Any]] = []
    result = None
    while result is None:
        msg = await asyncio.wait_for(ws.receive_json(), 20)
        if "reply_to" in msg:
            seen.append((msg["type"], msg["reply_to"]))
        for e in msg.get("events", []):
            if e["type"] == "value" and e["payload"]["json"] == "after":
                result = e
    assert seen.index(("queued", 2)) < seen.index(("accepted", 2))
    assert seen.index(("pong", 3)) < seen.index(("accepted", 2))
    await ws.close()


# ---------------------------------------------------------------------------- _ and _error


async def test_last_value_and_last_error(api: Any) -> None:
    s = await api.session()
    await api.value(s["id"], "6 * 7")
    assert (await api.value(s["id"], "_ + 1"))["json"] == 43
    status, body = await api.repl(s["id"], "throw new TypeError('boom')")
    assert body["status"] == "error"
    assert (await api.value(s["id"], "_error.message"))["json"] == "boom"
    assert (await api.value(s["id"], "_"))["json"] == "boom"  # the last successful value
    # A binding of the user's own wins and stays.
    await api.value(s["id"], "var _ = 'mine'")
    await api.value(s["id"], "1 + 1")
    assert (await api.value(s["id"], "_"))["json"] == "mine"


# ---------------------------------------------------------------------------- completion


async def test_completion_of_globals_properties_and_keywords(api: Any, client: Any) -> None:
    s = await api.session()
    await api.value(s["id"], "var alphaLongName = 1; var user = { profile: { name: 'a', nation: 'b' } }")
    url = f"/api/v1/sessions/{s['id']}/complete"
    r = await client.post(url, json={"input": "alph"})
    assert r.status == 200
    body = await r.json()
    assert body["from"] == 0 and body["to"] == 4
    assert {"name": "alphaLongName", "kind": "variable"} in body["candidates"]
    body = await (await client.post(url, json={"input": "x = user.profile.na; y", "cursor": 19})).json()
    assert [c["name"] for c in body["candidates"]] == ["name", "nation"]
    assert (body["from"], body["to"]) == (17, 19)
    body = await (await client.post(url, json={"input": "Math.ma"})).json()
    assert {"name": "max", "kind": "function"} in body["candidates"]
    body = await (await client.post(url, json={"input": "retu"})).json()
    assert {"name": "return", "kind": "keyword"} in body["candidates"]
    await expect_error(await client.post(url, json={"input": "ab", "cursor": 9}), 400, "VALIDATION_ERROR")
    await expect_error(
        await client.post(
            "/api/v1/sessions/00000000-0000-4000-8000-000000000000/complete", json={"input": "a"}
        ),
        404,
        "SESSION_NOT_FOUND",
    )


async def test_timers_fire_when_user_code_replaces_math_max(api: Any) -> None:
    s = await api.session()
    await api.value(s["id"], "Math.max = () => 600000; var fired = 0; setTimeout(() => { fired = 1 }, 5); 0")
    assert (await api.value(s["id"], "fired"))["json"] == 1


async def test_completion_runs_no_user_code(api: Any, client: Any) -> None:
    s = await api.session()
    await api.value(
        s["id"],
        "var calls = 0; var obj = { get boom() { calls++; return { inner: 1 } }, plain: 2 };"
        "var prox = new Proxy({}, { ownKeys() { calls++; return [] }, get() { calls++ },"
        " getOwnPropertyDescriptor() { calls++ }, getPrototypeOf() { calls++; return null } })",
    )
    url = f"/api/v1/sessions/{s['id']}/complete"
    names = [c["name"] for c in (await (await client.post(url, json={"input": "obj."})).json())["candidates"]]
    assert "boom" in names and "plain" in names
    for text in ("obj.boom.", "prox.", "prox.x."):
        assert (await (await client.post(url, json={"input": text})).json())["candidates"] == []
    assert (await api.value(s["id"], "calls"))["json"] == 0


async def test_completion_answers_while_the_session_is_busy(api: Any, client: Any) -> None:
    s = await api.session(wall_ms=20_000, cpu_ms=20_000)
    await api.value(s["id"], "var readyName = 1")
    r = await client.post(
        "/api/v1/executions/repl",
        json={"session_id": s["id"], "input": "while (true) {}", "wait": False},
    )
    running = await r.json()
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "complete", "id": 7, "session_id": s["id"], "input": "ready", "cursor": 5})
    msg = await asyncio.wait_for(ws.receive_json(), 10)
    assert msg["type"] == "completions" and msg["reply_to"] == 7
    assert {"name": "readyName", "kind": "variable"} in msg["candidates"]
    assert (msg["from"], msg["to"]) == (0, 5)
    await client.post(f"/api/v1/executions/{running['id']}/cancel")
    await ws.close()


# ---------------------------------------------------------------------------- full values


async def test_a_long_value_says_it_was_cut_and_json_holds_it_all(api: Any) -> None:
    s = await api.session()
    value = await api.value(s["id"], "'x'.repeat(20000) + 'END'")
    assert value["preview"].endswith("… 10,003 more characters")
    assert value["preview"].startswith("x" * 100)
    assert value["json"] == "x" * 20000 + "END"


async def test_a_value_over_the_output_limit_keeps_its_preview_only(api: Any) -> None:
    s = await api.session(max_output_kb=8)
    status, body = await api.repl(s["id"], "'y'.repeat(50000)")
    assert status == 201 and body["status"] == "ok"  # not failed
    assert body["result"]["truncated"] is True and "json" not in body["result"]
    assert body["metrics"]["output_bytes"] <= 8 * 1024 + 512
    # A value that fits is whole.
    value = await api.value(s["id"], "[1, 2, 3]")
    assert value["json"] == [1, 2, 3] and "truncated" not in value


async def test_values_and_maps_are_described_faithfully(api: Any) -> None:
    s = await api.session()
    assert (await api.value(s["id"], "-0"))["preview"] == "-0"
    m = await api.value(s["id"], "new Map([['k', {a: 1}]])")
    assert m["entries"] == [
        [
            {"type": "string", "preview": "k", "json": "k"},
            {"type": "object", "preview": "{ a: 1 }", "json": {"a": 1}},
        ]
    ]


# ---------------------------------------------------------------------------- console


async def test_console_clear_and_table_payloads(api: Any) -> None:
    s = await api.session()
    status, body = await api.repl(
        s["id"], "console.log('a'); console.clear(); console.table([{x: 1, y: 'z'}, {x: 2}])"
    )
    consoles = [e["payload"] for e in body["events"] if e["type"] == "console"]
    assert consoles[1] == {"level": "clear", "text": ""}
    table = consoles[2]
    assert table["level"] == "log"
    assert table["table"] == {"columns": ["(index)", "x", "y"], "rows": [["0", "1", "'z'"], ["1", "2", ""]]}
    assert table["text"].splitlines()[1] == "│ (index) │ x │ y   │"


async def test_console_log_carries_expandable_object_arguments(api: Any) -> None:
    s = await api.session()
    status, body = await api.repl(s["id"], "console.log('user', {id: 7, tags: ['a']})")
    payload = next(e["payload"] for e in body["events"] if e["type"] == "console")
    assert payload["text"] == "user { id: 7, tags: [ 'a' ] }"
    assert payload["args"][1]["json"] == {"id": 7, "tags": ["a"]}
