"""Resource bounds and a store that really fails: idle expiry, max sessions, disk full."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

from server.app import STORE, create_app
from tests.conftest import Api


async def _poll(fn, until, attempts=200, delay=0.05):
    for _ in range(attempts):
        value = await fn()
        if until(value):
            return value
        await asyncio.sleep(delay)
    return value


async def test_idle_sessions_are_closed_with_a_clear_reason(aiohttp_client, settings, worktree):
    client = await aiohttp_client(create_app(replace(settings, idle_timeout_s=0.4)))
    api = Api(client, worktree)
    busy = await api.session()
    idle = await api.session()

    async def get(sid):
        return await (await client.get(f"/api/v1/sessions/{sid}")).json()

    # Keep one session busy past the timeout; the other one expires.
    for _ in range(8):
        await api.value(busy["id"], "1+1")
        await asyncio.sleep(0.1)
    closed = await _poll(lambda: get(idle["id"]), lambda s: s["status"] == "closed")
    assert closed["status"] == "closed"
    assert "idle timeout" in closed["last_error"]
    assert (await get(busy["id"]))["status"] == "ready"
    summary = await (await client.get("/api/v1/runtime/summary")).json()
    assert idle["id"] not in summary["active_session_ids"]

    async def worker_alive():
        try:
            os.kill(idle["runtime_meta"]["worker_pid"], 0)
        except ProcessLookupError:
            return False
        return True

    assert await _poll(worker_alive, lambda alive: not alive) is False


async def test_disk_full_gives_named_500s_and_the_server_recovers(aiohttp_client, settings, worktree):
    app = create_app(settings)
    client = await aiohttp_client(app)
    api = Api(client, worktree)
    s = await api.session(max_events=0, max_output_kb=0)
    await api.value(s["id"], "var kept = 1")
    store = app[STORE]

    def page_count(conn):
        return conn.exec_driver_sql("PRAGMA page_count").scalar()

    pages = await store.write(page_count, operation="read page count")
    # SQLite's own "database or disk is full": the file may not grow past its current size.
    await store.write(
        lambda c: c.exec_driver_sql(f"PRAGMA max_page_count={pages}").fetchall(),
        operation="cap the database size",
    )
    flood = "for (let i = 0; i < 3000; i++) console.log('line ' + i + ' ' + 'x'.repeat(100)); 'done'"
    status, body = await api.repl(s["id"], flood)
    assert status == 500
    assert body["error"]["code"] == "INTERNAL"
    assert body["error"]["message"].startswith("store failure: could not ")
    assert "Traceback" not in str(body) and "INSERT" not in str(body)

    # The store recovers: the server works again without a restart, and nothing is left running.
    await store.write(
        lambda c: c.exec_driver_sql("PRAGMA max_page_count=1073741823").fetchall(),
        operation="lift the cap",
    )
    assert (await api.value(s["id"], "1+1"))["json"] == 2

    async def executions():
        r = await client.get(f"/api/v1/executions?session_id={s['id']}")
        return await r.json()

    rows = await _poll(executions, lambda xs: all(x["status"] != "running" for x in xs))
    assert all(x["status"] != "running" for x in rows)
    failed = [x for x in rows if x["input"] == flood]
    assert len(failed) == 1 and failed[0]["status"] == "error"
    events = await (await client.get(f"/api/v1/executions/{failed[0]['id']}/events?limit=10000")).json()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
