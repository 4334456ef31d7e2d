"""Limits enforced while code runs, rollbacks after kills, and faults that cost one session at most."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.conftest import eventually, stored_events


async def _run(api, sid, code):
    return await api.repl(sid, code)


async def _has_event(api, exec_id, typ):
    return any(e["type"] == typ for e in await stored_events(api.client, exec_id))


async def test_cpu_limit_stops_a_busy_loop_and_rolls_the_session_back(api):
    s = await api.session(cpu_ms=300, wall_ms=10_000)
    await api.value(s["id"], "var kept = 1")
    status, body = await _run(api, s["id"], "var lost = 2; while(true){}")
    assert status == 201
    assert body["status"] == "timeout"
    assert body["error"]["code"] == "CPU_LIMIT_EXCEEDED"
    last = body["events"][-1]
    assert last["type"] == "system" and last["payload"]["code"] == "CPU_LIMIT_EXCEEDED"
    assert last["payload"]["state"] == "rolled_back"
    assert "rolled back to before this execution" in last["payload"]["message"]
    # The execution ran for (about) its CPU budget, not the wall budget.
    assert 300 <= body["metrics"]["cpu_ms"] <= 450
    # The session continues from its checkpoint: usable at once, earlier state kept, the
    # killed execution's own state gone, the rollback counted.
    assert (await api.value(s["id"], "1+1"))["json"] == 2
    assert (await api.value(s["id"], "kept"))["json"] == 1
    assert (await api.value(s["id"], "typeof lost"))["json"] == "undefined"
    sess = await (await api.client.get(f"/api/v1/sessions/{s['id']}")).json()
    assert sess["status"] == "ready"
    assert sess["runtime_meta"]["rollbacks"] == 1
    assert sess["runtime_meta"]["resets"] == 0


@pytest.mark.parametrize(
    "code",
    ["await new Promise(() => {})", "await new Promise(r => setTimeout(r, 60000))"],
)
async def test_wall_limit_includes_awaited_time(api, code):
    s = await api.session(cpu_ms=10_000, wall_ms=400)
    await api.value(s["id"], "var kept = 7")
    status, body = await _run(api, s["id"], code)
    assert body["status"] == "timeout"
    assert body["error"]["code"] == "WALL_LIMIT_EXCEEDED"
    assert 400 <= body["metrics"]["wall_ms"] <= 600
    assert body["events"][-1]["type"] == "system"
    # Stopped in place (no JS was running): state survives, no reset.
    assert (await api.value(s["id"], "kept"))["json"] == 7
    sess = await (await api.client.get(f"/api/v1/sessions/{s['id']}")).json()
    assert sess["runtime_meta"]["resets"] == 0


async def test_memory_limit_gives_a_js_error_and_the_session_survives(api):
    s = await api.session(mem_mb=32)
    status, body = await _run(api, s["id"], "let a = []; while (true) a.push(new Array(100000).fill(1))")
    assert body["status"] == "error"
    assert "out of memory" in body["error"]["message"]
    assert (await api.value(s["id"], "1+1"))["json"] == 2


async def test_console_flood_stores_exactly_max_events(api):
    s = await api.session(max_events=10)
    status, body = await _run(api, s["id"], "for (let i = 0; ; i++) console.log(i)")
    assert status == 422
    assert body["error"]["code"] == "OUTPUT_LIMIT_EXCEEDED"
    exec_id = body["error"]["details"]["execution_id"]
    events = await stored_events(api.client, exec_id)
    assert len(events) == 10
    assert [e["seq"] for e in events] == list(range(1, 11))
    assert events[-1]["type"] == "system"
    assert events[-1]["payload"]["code"] == "OUTPUT_LIMIT_EXCEEDED"
    ex = await (await api.client.get(f"/api/v1/executions/{exec_id}")).json()
    assert ex["status"] == "error" and ex["error"]["code"] == "OUTPUT_LIMIT_EXCEEDED"


async def test_output_limit_holds_even_when_the_code_catches_the_error(api):
    s = await api.session(max_events=6, wall_ms=10_000, cpu_ms=10_000)
    status, body = await _run(api, s["id"], "for (;;) { try { console.log('x') } catch (e) {} }")
    assert status == 422
    exec_id = body["error"]["details"]["execution_id"]
    events = await stored_events(api.client, exec_id)
    assert len(events) == 6
    assert (await api.value(s["id"], "1+1"))["json"] == 2


async def test_output_bytes_limit(api):
    s = await api.session(max_output_kb=1)
    status, body = await _run(api, s["id"], "console.log('a'.repeat(600)); console.log('b'.repeat(600)); 1")
    assert status == 422
    exec_id = body["error"]["details"]["execution_id"]
    events = await stored_events(api.client, exec_id)
    texts = [e["payload"].get("text", "") for e in events if e["type"] == "console"]
    assert texts == ["a" * 600]  # the line that would pass the limit is not stored


async def test_patched_limits_apply_to_a_live_session(api):
    tpl = await api.template()
    s = await api.session(tpl["id"])
    status, body = await _run(api, s["id"], "for (let i = 0; i < 20; i++) console.log(i); 'ok'")
    assert status == 201
    r = await api.client.patch(
        f"/api/v1/templates/{tpl['id']}", json={"settings": {"limits": {"max_events": 5}}}
    )
    assert r.status == 200
    status, body = await _run(api, s["id"], "for (let i = 0; i < 20; i++) console.log(i); 'ok'")
    assert status == 422


async def test_two_spinning_sessions_each_get_their_own_cpu_budget(api):
    a = await api.session(cpu_ms=600, wall_ms=20_000)
    b = await api.session(cpu_ms=600, wall_ms=20_000)
    results = await asyncio.gather(_run(api, a["id"], "while(true){}"), _run(api, b["id"], "while(true){}"))
    for _status, body in results:
        assert body["error"]["code"] == "CPU_LIMIT_EXCEEDED"
        assert 600 * 0.7 <= body["metrics"]["cpu_ms"] <= 600 * 1.3


async def test_killed_worker_ends_the_execution_and_the_session_rolls_back(api):
    s = await api.session(wall_ms=20_000, cpu_ms=20_000)
    await api.value(s["id"], "var kept = 'yes'")
    pid = await api.worker_pid(s["id"])
    r = await api.client.post(
        "/api/v1/executions/repl",
        json={
            "session_id": s["id"],
            "input": "var lost = 1; console.log('spinning'); while(true){}",
            "wait": False,
        },
    )
    assert r.status == 202
    exec_id = (await r.json())["id"]
    # Killed once it really runs (its line is stored), as a crash in the middle of it would.
    await eventually(lambda: _has_event(api, exec_id, "console"))
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        ex = await (await api.client.get(f"/api/v1/executions/{exec_id}")).json()
        if ex["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert ex["status"] == "error"
    assert ex["error"]["code"] == "WORKER_CRASHED"
    events = await stored_events(api.client, exec_id)
    assert events[-1]["type"] == "system" and events[-1]["payload"]["code"] == "WORKER_CRASHED"
    assert events[-1]["payload"]["state"] == "rolled_back"
    sess = await (await api.client.get(f"/api/v1/sessions/{s['id']}")).json()
    assert sess["status"] == "ready"
    assert sess["runtime_meta"]["worker_pid"] != pid
    assert (await api.value(s["id"], "kept"))["json"] == "yes"
    assert (await api.value(s["id"], "typeof lost"))["json"] == "undefined"


async def test_idle_worker_killed_from_outside_rolls_back(api):
    s = await api.session()
    await api.value(s["id"], "var kept = 5")
    # A checkpoint is forked just after an execution's answer; the next execution's answer
    # means the one holding `kept` has reached the server.
    await api.value(s["id"], "0")
    pid = await api.worker_pid(s["id"])
    os.kill(pid, signal.SIGKILL)
    sess = await api.replaced_worker(s["id"], pid)
    assert sess["status"] == "ready"
    assert sess["runtime_meta"]["rollbacks"] == 1 and sess["runtime_meta"]["resets"] == 0
    assert (await api.value(s["id"], "kept + 1"))["json"] == 6


async def test_a_crashing_session_does_not_disturb_another(api):
    a = await api.session()
    b = await api.session()
    await api.value(b["id"], "var mine = 'safe'")
    os.kill(a["runtime_meta"]["worker_pid"], signal.SIGKILL)
    assert (await api.value(b["id"], "mine"))["json"] == "safe"
