"""Faults found in review, pinned: each once left an execution running or a client waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time

from server.app import POOL, create_app
from server.http.keys import SERVICES
from tests.conftest import Api, eventually, session_body
from tests.test_pipeline_faults import FaultyStore


async def _executions(client, session_id):
    return await (await client.get("/api/v1/executions", params={"session_id": session_id})).json()


async def test_a_startup_file_that_never_ends_fails_start_up_once(api, client, worktree):
    (worktree / "spin.js").write_text("while (true) {}")
    tpl = await api.template(limits={"cpu_ms": 100, "wall_ms": 2000})
    r = await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "spin.js"})
    assert r.status == 201
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    assert r.status == 422
    err = (await r.json())["error"]
    assert err["code"] == "STARTUP_FAILED"
    assert "CPU time limit" in err["message"]
    session = await (await client.get(f"/api/v1/sessions/{err['details']['session_id']}")).json()
    assert session["status"] == "crashed"
    runs = await _executions(client, session["id"])
    assert [(e["kind"], e["status"]) for e in runs] == [("startup", "timeout")]
    summary = await (await client.get("/api/v1/runtime/summary")).json()
    assert summary["running_executions"] == 0


async def test_closing_the_socket_while_the_row_is_being_written_leaves_nothing_running(
    api, client, settings
):
    s = await api.session()
    store = client.server.app[SERVICES].store
    path = settings.db_url.split("sqlite:///", 1)[1]

    def hold_the_database() -> None:  # another process's write transaction, for real
        time.sleep(0.25)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        time.sleep(0.6)
        other.execute("COMMIT")
        other.close()

    threading.Thread(target=hold_the_database).start()
    # Queue a slow write first so the execution row goes to the writer thread behind it.
    slow = asyncio.ensure_future(store.write(lambda c: time.sleep(0.3), operation="slow"))
    await asyncio.sleep(0.05)
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "execute", "id": 1, "session_id": s["id"], "input": "1+1"})
    await asyncio.sleep(0.45)
    await ws.close()
    await slow
    for _ in range(100):
        runs = await _executions(client, s["id"])
        if runs and all(e["status"] != "running" for e in runs):
            break
        await asyncio.sleep(0.05)
    assert [(e["input"], e["status"]) for e in runs] == [("1+1", "ok")]
    assert (await api.value(s["id"], "2+2"))["json"] == 4


async def test_a_finalization_written_by_the_fallback_is_still_announced(aiohttp_client, settings, worktree):
    store = FaultyStore(settings.db_url)
    client = await aiohttp_client(create_app(settings, store=store))
    api = Api(client, worktree)
    s = await api.session()
    status, running = await api.repl(s["id"], "await new Promise(r => setTimeout(r, 300)); 1", wait=False)
    assert status == 202
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "subscribe", "id": 1, "execution_id": running["id"]})
    store.fail_finalize = True
    final = None
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), 10)
        if msg["type"] == "execution":
            final = msg["execution"]
        if msg["type"] == "complete":
            break
    assert final["status"] == "error"
    assert final["error"]["message"] == "store failure: could not finalize execution"


async def test_a_dead_fork_server_is_replaced(api, client, worktree):
    s = await api.session(cpu_ms=100, wall_ms=2000)
    await api.value(s["id"], "var kept = 3")
    await api.value(s["id"], "0")  # its answer comes after the checkpoint holding `kept`
    pid = await api.worker_pid(s["id"])
    os.kill(client.server.app[POOL]._proc.pid, signal.SIGKILL)
    # Its workers die with it; the session continues from its checkpoint (not a child of the
    # fork server) with its state.
    await api.replaced_worker(s["id"], pid)
    assert (await api.value(s["id"], "kept"))["json"] == 3
    # The busy loop is stopped and the session rolled back again.
    status, body = await api.repl(s["id"], "while(true){}")
    assert status == 201 and body["error"]["code"] == "CPU_LIMIT_EXCEEDED"
    assert body["events"][-1]["payload"]["state"] == "rolled_back"
    assert (await api.value(s["id"], "kept + 1"))["json"] == 4
    fresh = await api.session()
    assert (await api.value(fresh["id"], "'new'"))["json"] == "new"
    assert all(e["status"] != "running" for e in await _executions(client, s["id"]))


async def test_subscribe_then_unsubscribe_at_once_are_handled_in_order(api, client):
    s = await api.session()
    ws = await client.ws_connect("/api/v1/ws")
    await ws.send_json({"type": "subscribe", "id": 1, "session_id": s["id"]})
    await ws.send_json({"type": "subscribe", "id": 2, "session_id": s["id"]})
    await ws.send_json({"type": "unsubscribe", "id": 3, "subscription": "s2"})
    replies = [await asyncio.wait_for(ws.receive_json(), 5) for _ in range(3)]
    assert [(m["type"], m["reply_to"]) for m in replies] == [
        ("subscribed", 1),
        ("subscribed", 2),
        ("unsubscribed", 3),
    ]
    assert [replies[0]["subscription"], replies[1]["subscription"]] == ["s1", "s2"]


async def test_paths_with_control_characters_or_a_trailing_slash_are_invalid(api, client, worktree):
    (worktree / "hello.js").write_text("1")
    s = await api.session()
    for bad in ("nul\u0000.js", "hello.js\u0000.txt", "hello.js/", "a\nb.js"):
        r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": bad})
        body = await r.json()
        assert (r.status, body["error"]["code"]) == (422, "INVALID_PATH"), bad
    assert await _executions(client, s["id"]) == []
    tpl = await api.template()
    r = await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "a\u0000.js"})
    assert r.status == 422 and (await r.json())["error"]["code"] == "INVALID_PATH"
    # The template stays usable: no startup file was stored.
    assert (await api.session(tpl["id"]))["status"] == "ready"


async def test_nul_in_source_is_refused_rather_than_cut_short(api, client, worktree):
    s = await api.session()
    status, body = await api.repl(s["id"], "'a\u0000b'.length")
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    assert "NUL" in body["error"]["message"]
    (worktree / "bin.js").write_bytes(b"1\x00")
    r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": "bin.js"})
    assert r.status == 400
    assert await _executions(client, s["id"]) == []


async def test_template_names_are_bounded_and_printable(client):
    for bad in ("x" * 201, "tab\there", "nul\u0000"):
        r = await client.post("/api/v1/templates", json={"name": bad})
        assert (r.status, (await r.json())["error"]["code"]) == (400, "VALIDATION_ERROR")
    assert await (await client.get("/api/v1/templates")).json() == []
    r = await client.post("/api/v1/templates", json={"name": "y" * 200})
    assert r.status == 201


async def test_memory_limit_below_what_quickjs_needs_is_refused(api, client):
    tpl = await api.template()
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"settings": {"limits": {"mem_mb": 1}}})
    body = await r.json()
    assert r.status == 400 and "at least 8" in body["error"]["message"]
    detail = await (await client.get(f"/api/v1/templates/{tpl['id']}")).json()
    assert detail["settings"]["limits"]["mem_mb"] == 128
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"settings": {"limits": {"mem_mb": 0}}})
    assert r.status == 200


async def test_a_patch_that_changes_nothing_keeps_updated_at(api, client):
    tpl = await api.template()
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={})
    assert r.status == 200
    assert (await r.json())["template"]["updated_at"] == tpl["updated_at"]


async def test_requests_that_arrive_during_a_rebuild_wait_for_it(api, client, worktree):
    # A start-up file that takes a while makes the rebuild (a reset from the template: the
    # checkpoint dies too) long enough for requests to arrive while it runs.
    (worktree / "slow.js").write_text(
        "var t0 = Date.now(); while (Date.now() - t0 < 700) {} var booted = (globalThis.booted || 0) + 1"
    )
    tpl = await api.template(limits={"cpu_ms": 5000, "wall_ms": 10_000})
    r = await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "slow.js"})
    assert r.status == 201
    s = await api.session(tpl["id"])
    assert (await api.value(s["id"], "var kept = 1; booted"))["json"] == 1
    worker = client.server.app[SERVICES].sessions.live[s["id"]].worker
    ckpt = await worker.current_checkpoint()
    assert ckpt is not None
    for pid in (ckpt.pid, worker.pid):
        os.kill(pid, signal.SIGKILL)

    async def gone() -> bool:
        return not worker.alive

    await eventually(gone)  # the server has seen the worker go
    # An execution and a fork at once: they arrive during the rebuild the server started by
    # itself (or the execution starts it) and wait for it instead of failing.
    run = api.repl(s["id"], "[typeof kept, booted]")
    fork = client.post(f"/api/v1/sessions/{s['id']}/fork", json={})
    (status, body), forked = await asyncio.gather(run, fork)
    assert status == 201 and body["status"] == "ok", (status, body.get("error"), body.get("events"))
    assert body["result"]["json"] == ["undefined", 1]  # reset from the template, once
    assert forked.status == 201, await forked.text()
    child = await forked.json()
    assert (await api.value(child["id"], "booted"))["json"] == 1
    meta = (await api.get_session(s["id"]))["runtime_meta"]
    assert meta["resets"] == 1
    assert all(e["status"] != "running" for e in await _executions(client, s["id"]))
