"""Snapshots (API.md §11): sessions keep their state through kills, and fork in milliseconds."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from server.app import POOL
from server.http.keys import SERVICES
from tests.conftest import eventually, expect_error, history, stored_events
from tests.test_restart import descendants, wait_until_gone

SPIN = "var lost = 1; while (true) {}"


async def _kill_scenario(api: Any, client: Any, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set state, then have an execution killed the way ``kind`` says; (session, execution)."""
    limits: dict[str, Any] = {"cpu_ms": 10_000, "wall_ms": 20_000}
    if kind == "cpu":
        limits["cpu_ms"] = 200
    elif kind == "wall":
        limits.update(cpu_ms=0, wall_ms=300)
    elif kind == "output":
        limits["max_events"] = 5
    s = await api.session(**limits)
    await api.value(s["id"], "var kept = 'state'; let l = 1; const c = 2; class K { three() { return 3 } }")
    if kind in ("cpu", "wall"):
        status, body = await api.repl(s["id"], SPIN)
        assert status == 201, body
        return s, body
    if kind == "output":
        # The code swallows the limit's error and spins on: it has to be killed.
        status, body = await api.repl(
            s["id"], "var lost = 1; for (;;) { try { console.log('x') } catch (e) {} }"
        )
        assert status == 422, body
        return s, await (
            await client.get(f"/api/v1/executions/{body['error']['details']['execution_id']}")
        ).json()
    r = await client.post(
        "/api/v1/executions/repl",
        json={
            "session_id": s["id"],
            "input": "var lost = 1; console.log('go'); while (true) {}",
            "wait": False,
        },
    )
    exec_id = (await r.json())["id"]
    await eventually(lambda: _has(client, exec_id, "console"))
    if kind == "rest-cancel":
        r = await client.post(f"/api/v1/executions/{exec_id}/cancel")
        assert r.status == 200
        return s, await r.json()
    if kind == "ws-cancel":
        ws = await client.ws_connect("/api/v1/ws")
        await ws.send_json({"type": "cancel", "id": 1, "execution_id": exec_id})
        while True:
            msg = await asyncio.wait_for(ws.receive_json(), 30)
            if msg["type"] == "cancelled":
                await ws.close()
                return s, msg["execution"]
    assert kind == "sigkill"
    os.kill(await api.worker_pid(s["id"]), signal.SIGKILL)

    async def ended() -> dict[str, Any] | None:
        ex = await (await client.get(f"/api/v1/executions/{exec_id}")).json()
        return ex if ex["status"] != "running" else None

    return s, await eventually(ended)


async def _has(client: Any, exec_id: str, typ: str) -> bool:
    return any(e["type"] == typ for e in await stored_events(client, exec_id))


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("cpu", "timeout", "CPU_LIMIT_EXCEEDED"),
        ("wall", "timeout", "WALL_LIMIT_EXCEEDED"),
        ("rest-cancel", "cancelled", "CANCELLED"),
        ("ws-cancel", "cancelled", "CANCELLED"),
        ("output", "error", "OUTPUT_LIMIT_EXCEEDED"),
        ("sigkill", "error", "WORKER_CRASHED"),
    ],
)
async def test_state_survives_a_kill(api: Any, client: Any, kind: str, status: str, code: str) -> None:
    s, ex = await _kill_scenario(api, client, kind)
    assert ex["status"] == status and ex["error"]["code"] == code
    last = (await stored_events(client, ex["id"]))[-1]
    assert last["type"] == "system" and last["payload"]["code"] == code
    assert last["payload"]["state"] == "rolled_back", last
    # Everything from before the killed execution is there, let/const/class included...
    assert (await api.value(s["id"], "[kept, l, c, new K().three()]"))["json"] == ["state", 1, 2, 3]
    # ...and nothing the killed execution did.
    assert (await api.value(s["id"], "typeof lost"))["json"] == "undefined"
    row = await api.get_session(s["id"])
    assert row["status"] == "ready"
    assert row["runtime_meta"]["rollbacks"] == 1 and row["runtime_meta"]["resets"] == 0


async def test_rollbacks_in_a_row(api: Any) -> None:
    s = await api.session(cpu_ms=150, wall_ms=10_000)
    await api.value(s["id"], "var n = 0")
    for i in range(1, 4):
        await api.value(s["id"], "n++")
        status, body = await api.repl(s["id"], "n = 1000; while (true) {}")
        assert body["events"][-1]["payload"]["state"] == "rolled_back"
        assert (await api.value(s["id"], "n"))["json"] == i
    assert (await api.get_session(s["id"]))["runtime_meta"]["rollbacks"] == 3


async def test_timers_left_running_survive_a_rollback(api: Any) -> None:
    s = await api.session(cpu_ms=200, wall_ms=10_000)
    status, body = await api.repl(
        s["id"], "var ticks = 0; setInterval(() => ticks++, 10); 'started'", timers="background"
    )
    assert status == 201 and body["result"]["json"] == "started"
    await api.value(s["id"], "0")  # the next answer comes after the checkpoint holding the timer
    status, body = await api.repl(s["id"], SPIN)
    assert body["events"][-1]["payload"]["state"] == "rolled_back"
    first = (await api.value(s["id"], "ticks"))["json"]

    async def ticking() -> bool:
        return (await api.value(s["id"], "ticks"))["json"] > first

    assert await eventually(ticking)


async def test_reset_is_the_fallback_when_the_checkpoint_is_gone_too(api: Any, client: Any) -> None:
    (api.worktree / "boot.js").write_text("var booted = (globalThis.booted || 0) + 1")
    tpl = await api.template(limits={"cpu_ms": 200, "wall_ms": 10_000})
    r = await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "boot.js"})
    assert r.status == 201
    s = await api.session(tpl["id"])
    await api.value(s["id"], "var kept = 1")
    # The fault: the session's current checkpoint process dies (found through the server).
    worker = client.server.app[SERVICES].sessions.live[s["id"]].worker
    ckpt = await worker.current_checkpoint()
    assert ckpt is not None and ckpt.pid in descendants(worker.pid)
    os.kill(ckpt.pid, signal.SIGKILL)
    assert not wait_until_gone({ckpt.pid})
    status, body = await api.repl(s["id"], SPIN)
    assert body["error"]["code"] == "CPU_LIMIT_EXCEEDED"
    assert body["events"][-1]["payload"]["state"] == "reset"
    assert "reset from its template" in body["events"][-1]["payload"]["message"]
    assert (await api.value(s["id"], "[typeof kept, booted]"))["json"] == ["undefined", 1]
    meta = (await api.get_session(s["id"]))["runtime_meta"]
    assert meta["resets"] == 1 and meta["rollbacks"] == 0
    # The rebuilt session has a checkpoint again: the next kill rolls back.
    await api.value(s["id"], "var again = 2")
    status, body = await api.repl(s["id"], SPIN)
    assert body["events"][-1]["payload"]["state"] == "rolled_back"
    assert (await api.value(s["id"], "again"))["json"] == 2


async def test_closing_a_session_leaves_no_process(api: Any, client: Any) -> None:
    zygote = client.server.app[POOL]._proc.pid
    before = descendants(zygote)
    s = await api.session()
    await api.value(s["id"], "var x = 1")
    fork = await (await client.post(f"/api/v1/sessions/{s['id']}/fork")).json()
    await api.value(fork["id"], "x")
    mine = (descendants(zygote) | descendants(await api.worker_pid(s["id"]))) - before
    assert len(mine) >= 4  # two workers and their checkpoints
    for sid in (s["id"], fork["id"]):
        assert (await client.post(f"/api/v1/sessions/{sid}/close")).status == 200
    assert not wait_until_gone(mine)


# ---------------------------------------------------------------------------- fork


async def test_a_fork_copies_the_state_and_then_goes_its_own_way(api: Any, client: Any) -> None:
    s = await api.session()
    await api.value(s["id"], "var shared = 'from parent'; let counter = 1; const limit = 5")
    r = await client.post(f"/api/v1/sessions/{s['id']}/fork", json={"workspace_id": "other"})
    assert r.status == 201
    f = await r.json()
    assert f["id"] != s["id"] and f["status"] == "ready"
    assert f["vm_id"] == s["vm_id"] and f["workspace_id"] == "other"
    assert f["base_commit_oid"] == s["base_commit_oid"] and f["worktree_path"] == s["worktree_path"]
    last = (await history(client, s["id"]))[0]
    assert f["runtime_meta"]["forked_from"] == {"session_id": s["id"], "execution_id": last["id"]}
    assert await history(client, f["id"]) == []  # no startup files run, empty history
    assert (await api.value(f["id"], "[shared, counter, limit]"))["json"] == ["from parent", 1, 5]
    await api.value(f["id"], "shared = 'fork'; counter = 10; var onlyFork = true")
    await api.value(s["id"], "shared = 'parent again'; var onlyParent = true")
    assert (await api.value(f["id"], "[shared, counter, typeof onlyParent]"))["json"] == [
        "fork",
        10,
        "undefined",
    ]
    assert (await api.value(s["id"], "[shared, counter, typeof onlyFork]"))["json"] == [
        "parent again",
        1,
        "undefined",
    ]
    # Closing the parent does not touch the fork.
    await client.post(f"/api/v1/sessions/{s['id']}/close")
    assert (await api.value(f["id"], "shared"))["json"] == "fork"


async def test_a_fork_does_not_wait_for_a_running_execution(api: Any, client: Any) -> None:
    s = await api.session(wall_ms=30_000)
    await api.value(s["id"], "var before = 1")
    r = await client.post(
        "/api/v1/executions/repl",
        json={
            "session_id": s["id"],
            "input": "var during = 1; console.log('waiting'); await new Promise(r => setTimeout(r, 5000))",
            "wait": False,
        },
    )
    running = await r.json()
    await eventually(lambda: _has(client, running["id"], "console"))
    r = await client.post(f"/api/v1/sessions/{s['id']}/fork")
    assert r.status == 201
    f = await r.json()
    # Answered while the parent's execution still runs, and holds none of its effects.
    assert (await (await client.get(f"/api/v1/executions/{running['id']}")).json())["status"] == "running"
    assert f["runtime_meta"]["forked_from"]["execution_id"] != running["id"]
    assert (await api.value(f["id"], "[before, typeof during]"))["json"] == [1, "undefined"]
    await client.post(f"/api/v1/executions/{running['id']}/cancel")


async def test_forks_of_forks(api: Any, client: Any) -> None:
    s = await api.session()
    await api.value(s["id"], "var depth = 0")
    current = s
    for level in range(1, 4):
        r = await client.post(f"/api/v1/sessions/{current['id']}/fork")
        assert r.status == 201
        current = await r.json()
        assert (await api.value(current["id"], "++depth"))["json"] == level
    assert (await api.value(s["id"], "depth"))["json"] == 0


async def test_a_fork_in_a_subdirectory_narrows_its_worktree(api: Any, client: Any) -> None:
    sub = api.worktree / "sub"
    sub.mkdir()
    (sub / "inner.txt").write_text("inside")
    (api.worktree / "outer.txt").write_text("outside")
    tpl = await api.template()
    await client.post(f"/api/v1/templates/{tpl['id']}/modules", json={"name": "fs"})
    s = await api.session(tpl["id"])
    await api.value(s["id"], "var fs = require('fs')")
    r = await client.post(f"/api/v1/sessions/{s['id']}/fork", json={"worktree_path": str(sub)})
    assert r.status == 201
    f = await r.json()
    assert f["worktree_path"] == str(sub)
    assert (await api.value(f["id"], "fs.readFileSync('inner.txt', 'utf8')"))["json"] == "inside"
    status, body = await api.repl(f["id"], "fs.readFileSync('../outer.txt', 'utf8')")
    assert body["status"] == "error" and "EACCES" in body["error"]["message"]


async def test_a_rolled_back_session_and_a_fresh_fork_can_be_forked_at_once(api: Any, client: Any) -> None:
    s = await api.session(cpu_ms=200, wall_ms=10_000)
    await api.value(s["id"], "var kept = 41")
    status, body = await api.repl(s["id"], SPIN)
    assert body["events"][-1]["payload"]["state"] == "rolled_back"
    # The promoted worker's checkpoints reflect the state before the kill: they are forkable.
    r = await client.post(f"/api/v1/sessions/{s['id']}/fork", json={})
    assert r.status == 201, await r.text()
    child = await r.json()
    r = await client.post(f"/api/v1/sessions/{child['id']}/fork", json={})  # a fork of a fresh fork
    assert r.status == 201, await r.text()
    grandchild = await r.json()
    assert (await api.value(grandchild["id"], "kept + 1"))["json"] == 42


async def test_a_fork_whose_checkpoint_died_says_try_again(api: Any, client: Any) -> None:
    s = await api.session()
    await api.value(s["id"], "var kept = 1")
    worker = client.server.app[SERVICES].sessions.live[s["id"]].worker
    ckpt = await worker.current_checkpoint()
    assert ckpt is not None
    os.kill(ckpt.pid, signal.SIGKILL)  # e.g. the kernel's OOM killer chose it
    assert not wait_until_gone({ckpt.pid})
    r = await client.post(f"/api/v1/sessions/{s['id']}/fork", json={})
    err = await expect_error(r, 409, "SESSION_NOT_READY")
    assert "try again" in err["message"]
    # Its next execution takes a new checkpoint; then a fork works.
    assert (await api.value(s["id"], "kept + 1"))["json"] == 2

    async def forked() -> bool:
        r = await client.post(f"/api/v1/sessions/{s['id']}/fork", json={})
        return r.status == 201

    await eventually(forked, within=10)


async def test_background_timers_share_a_checkpoint_instead_of_one_per_callback(
    api: Any, client: Any
) -> None:
    s = await api.session(wall_ms=60_000)
    pool = client.server.app[POOL]
    code = "var n = 0; setInterval(() => n++, 3); 'started'"
    status, body = await api.repl(s["id"], code, timers="background")
    assert status == 201 and body["result"]["json"] == "started"
    before = pool.checkpoints_taken

    async def ticked() -> bool:
        return (await api.value(s["id"], "n"))["json"] >= 150

    await eventually(ticked)
    # Each `n` above was an execution: a checkpoint before it (the callbacks changed the state)
    # and one after it, at most; the ≥ 150 callbacks did not add one each, as they did when a
    # checkpoint followed every callback.
    executions = len(await history(client, s["id"], limit=1000))
    taken = pool.checkpoints_taken - before
    assert taken <= 2 * executions + 2, (taken, executions)


async def test_fork_errors(api: Any, client: Any, tmp_path: Any) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    await expect_error(await client.post(f"/api/v1/sessions/{missing}/fork"), 404, "SESSION_NOT_FOUND")
    await expect_error(await client.post("/api/v1/sessions/nope/fork"), 400, "VALIDATION_ERROR")
    s = await api.session()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    err = await expect_error(
        await client.post(f"/api/v1/sessions/{s['id']}/fork", json={"worktree_path": str(outside)}),
        422,
        "INVALID_PATH",
    )
    assert "inside" in err["message"]
    await expect_error(
        await client.post(f"/api/v1/sessions/{s['id']}/fork", json={"worktree_path": "relative"}),
        422,
        "INVALID_PATH",
    )
    await expect_error(
        await client.post(f"/api/v1/sessions/{s['id']}/fork", json={"bogus": 1}), 400, "INVALID_REQUEST"
    )
    await client.post(f"/api/v1/sessions/{s['id']}/close")
    await expect_error(await client.post(f"/api/v1/sessions/{s['id']}/fork"), 409, "SESSION_NOT_READY")


async def test_fork_answers_503_when_the_server_is_full(
    aiohttp_client: Any, settings: Any, worktree: Any
) -> None:
    from dataclasses import replace

    from server.app import create_app
    from tests.conftest import Api

    client = await aiohttp_client(create_app(replace(settings, max_sessions=1)))
    api = Api(client, worktree)
    s = await api.session()
    await expect_error(await client.post(f"/api/v1/sessions/{s['id']}/fork"), 503, "TOO_MANY_SESSIONS")
    # Nothing was left behind by the refusal.
    assert [row["id"] for row in await (await client.get("/api/v1/sessions")).json()] == [s["id"]]


async def test_without_checkpoints_a_kill_resets_and_fork_is_refused(
    aiohttp_client: Any, settings: Any, worktree: Any
) -> None:
    from dataclasses import replace

    from server.app import create_app
    from tests.conftest import Api

    client = await aiohttp_client(create_app(replace(settings, checkpoints=False)))
    api = Api(client, worktree)
    s = await api.session(cpu_ms=150, wall_ms=10_000)
    await api.value(s["id"], "var kept = 1")
    status, body = await api.repl(s["id"], SPIN)
    assert body["events"][-1]["payload"]["state"] == "reset"
    assert (await api.value(s["id"], "typeof kept"))["json"] == "undefined"
    await expect_error(await client.post(f"/api/v1/sessions/{s['id']}/fork"), 409, "SESSION_NOT_READY")
    body = await (await client.post(f"/api/v1/sessions/{s['id']}/complete", json={"input": "Ma"})).json()
    assert body["candidates"] == []
    # Only the worker runs: no checkpoint process below it.
    assert descendants(await api.worker_pid(s["id"])) == set()


async def test_a_big_session_gets_its_checkpoint_once_idle(api: Any, client: Any) -> None:
    # Over ~96 MB a fork is costly: the checkpoint waits for a moment of idleness instead of
    # following every execution (docs/performance.md); the state is kept all the same.
    tpl = await api.template(limits={"cpu_ms": 20_000, "wall_ms": 60_000, "mem_mb": 400})
    s = await api.session(tpl["id"])
    await api.value(s["id"], "var big = []; for (let i = 0; i < 7e6; i++) big.push(i); big.length")
    await api.value(s["id"], "var kept = 'big and kept'")
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"settings": {"limits": {"cpu_ms": 300}}})
    assert r.status == 200
    worker = client.server.app[SERVICES].sessions.live[s["id"]].worker
    ckpt = await worker.current_checkpoint(within_s=30)
    assert ckpt is not None and ckpt.execution_id == worker.last_finished
    status, body = await api.repl(s["id"], SPIN)
    assert body["events"][-1]["payload"]["state"] == "rolled_back"
    assert (await api.value(s["id"], "[kept, big.length]"))["json"] == ["big and kept", 7_000_000]


async def test_a_busy_server_defers_checkpoints_and_says_what_a_rollback_lost(api: Any) -> None:
    # Well over a hundred executions a second: checkpointing each would take more CPU than the
    # pacer allows, so they share checkpoints until the session is idle (docs/performance.md).
    s = await api.session(cpu_ms=200, wall_ms=10_000)
    await api.value(s["id"], "var n = 0")
    for _ in range(300):
        await api.value(s["id"], "n++")
    status, body = await api.repl(s["id"], SPIN)
    payload = body["events"][-1]["payload"]
    assert payload["state"] == "rolled_back"
    lost = payload.get("lost_executions", 0)
    assert lost >= 1, payload  # the burst outran its checkpoints...
    assert "their changes are gone too" in payload["message"]
    # ...and the count is the truth: the state is that of `lost` executions ago.
    assert (await api.value(s["id"], "n"))["json"] == 300 - lost
