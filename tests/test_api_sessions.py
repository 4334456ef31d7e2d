"""Session routes (API.md sections 3, 4 and 6): create with start-up, list, get, close."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from server.app import create_app
from tests.conftest import MISSING, TS_RE, expect_error, get_json, session_body

SESSION_KEYS = {
    "id",
    "vm_id",
    "workspace_id",
    "base_commit_oid",
    "worktree_path",
    "status",
    "created_at",
    "closed_at",
    "last_error",
    "runtime_meta",
    "node_id",
}


async def active_ids(client: Any) -> list[str]:
    return (await get_json(client, "/api/v1/runtime/summary"))["active_session_ids"]


# ---------------------------------------------------------------- create


async def test_create_session_shape(client, api, worktree):
    tpl = await api.template("profile")
    await client.post(f"/api/v1/templates/{tpl['id']}/modules", json={"name": "fs"})
    await client.patch(f"/api/v1/templates/{tpl['id']}", json={"settings": {"limits": {"cpu_ms": 1500}}})
    (worktree / "init.js").write_text("var boot = 1;")
    await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "./init.js"})

    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    assert r.status == 201, await r.text()
    s = await r.json()
    assert SESSION_KEYS - {"closed_at", "last_error"} <= set(s) <= SESSION_KEYS
    assert str(uuid.UUID(s["id"])) == s["id"]
    assert s["vm_id"] == tpl["id"]
    assert (s["workspace_id"], s["base_commit_oid"]) == ("ws", "abc123")
    assert s["worktree_path"] == str(worktree)
    assert s["status"] == "ready"
    assert TS_RE.match(s["created_at"])
    assert s.get("closed_at") is None and s.get("last_error") is None
    meta = s["runtime_meta"]
    assert meta["template_name"] == "profile"
    assert meta["limits"]["cpu_ms"] == 1500
    assert meta["modules"] == ["fs"]
    assert meta["libraries"] == []
    assert meta["startup_files"] == ["init.js"]
    assert meta["resets"] == 0
    assert isinstance(meta["worker_pid"], int)

    assert await get_json(client, f"/api/v1/sessions/{s['id']}") == s
    assert await active_ids(client) == [s["id"]]
    # The node that holds it (the only one, on SQLite) is named, as runtime/summary names itself.
    assert s["node_id"] == (await get_json(client, "/api/v1/runtime/summary"))["node_id"]


async def test_startup_files_run_in_order_and_state_persists(client, api, worktree):
    tpl = await api.template()
    (worktree / "a.js").write_text("var order = ['a'];")
    (worktree / "b.js").write_text("order.push('b'); console.log('from b');")
    await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "b.js", "order_index": 2})
    await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "a.js", "order_index": 1})
    s = await api.session(tpl["id"])
    assert (await api.value(s["id"], "order.join(',')"))["json"] == "a,b"

    history = await get_json(client, f"/api/v1/executions?session_id={s['id']}")
    startups = [e for e in history if e["kind"] == "startup"]
    assert [e["path"] for e in startups] == ["b.js", "a.js"]  # newest first
    assert all(e["status"] == "ok" for e in startups)
    events = await get_json(client, f"/api/v1/executions/{startups[0]['id']}/events")
    assert [e["type"] for e in events] == ["console", "value"]


async def test_create_session_validation(client, api, worktree):
    tpl = await api.template()
    for field in ("template_id", "workspace_id", "base_commit_oid", "worktree_path"):
        for value in ("", None, "   "):
            body = {**session_body(tpl["id"], worktree), field: value}
            r = await client.post("/api/v1/sessions", json=body)
            assert r.status == 400, (field, value)
            await expect_error(r, 400, "VALIDATION_ERROR")
        body = session_body(tpl["id"], worktree)
        del body[field]
        await expect_error(await client.post("/api/v1/sessions", json=body), 400, "VALIDATION_ERROR")
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree, extra=1))
    err = await expect_error(r, 400, "INVALID_REQUEST")
    assert "extra" in err["message"]
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree, workspace_id=1))
    await expect_error(r, 400, "INVALID_REQUEST")
    r = await client.post("/api/v1/sessions", json=session_body("nope", worktree))
    err = await expect_error(r, 400, "VALIDATION_ERROR")
    assert err["message"] == "template_id must be a valid UUID"
    r = await client.post("/api/v1/sessions", json=session_body(MISSING, worktree))
    err = await expect_error(r, 404, "TEMPLATE_NOT_FOUND")
    assert err["details"]["template_id"] == MISSING
    assert await get_json(client, "/api/v1/sessions") == []


async def test_worktree_must_be_an_absolute_existing_directory(client, api, worktree):
    tpl = await api.template()
    (worktree / "file.txt").write_text("x")
    for path in ("worktree", "./worktree", str(worktree / "missing"), str(worktree / "file.txt")):
        r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree, worktree_path=path))
        assert r.status == 422, path
        err = await expect_error(r, 422, "INVALID_PATH")
        assert "worktree_path" in err["message"]
    assert await get_json(client, "/api/v1/sessions") == []
    assert await active_ids(client) == []


# ---------------------------------------------------------------- crashed sessions


async def test_throwing_startup_file_crashes_the_session(client, api, worktree):
    tpl = await api.template()
    (worktree / "boom.js").write_text("throw new Error('kaboom')")
    await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "boom.js"})
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    err = await expect_error(r, 422, "STARTUP_FAILED")
    sid, eid = err["details"]["session_id"], err["details"]["execution_id"]
    assert "kaboom" in err["message"]

    s = await get_json(client, f"/api/v1/sessions/{sid}")
    assert s["status"] == "crashed"
    assert "kaboom" in s["last_error"]
    assert [x["id"] for x in await get_json(client, "/api/v1/sessions?status=crashed")] == [sid]
    ex = await get_json(client, f"/api/v1/executions/{eid}")
    assert (ex["kind"], ex["status"], ex["path"]) == ("startup", "error", "boom.js")
    assert ex["session_id"] == sid
    events = await get_json(client, f"/api/v1/executions/{eid}/events")
    assert events[-1]["type"] == "exception"

    summary = await get_json(client, "/api/v1/runtime/summary")
    assert summary["active_sessions"] == 0 and sid not in summary["active_session_ids"]
    status, body = await api.repl(sid, "1")
    assert status == 409 and body["error"]["code"] == "SESSION_NOT_READY"


async def test_missing_startup_file_is_file_not_found_and_crashes(client, api, worktree):
    tpl = await api.template()
    await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "nowhere.js"})
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    err = await expect_error(r, 404, "FILE_NOT_FOUND")
    sid = err["details"]["session_id"]
    s = await get_json(client, f"/api/v1/sessions/{sid}")
    assert s["status"] == "crashed" and "nowhere.js" in s["last_error"]
    assert await active_ids(client) == []


async def test_uncached_library_is_library_unavailable_and_crashes(client, api, worktree):
    tpl = await api.template()
    r = await client.post(f"/api/v1/templates/{tpl['id']}/libraries", json={"name": "lodash-4.17.21"})
    assert r.status == 201
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    err = await expect_error(r, 422, "LIBRARY_UNAVAILABLE")
    assert "lodash-4.17.21" in err["message"]
    s = await get_json(client, f"/api/v1/sessions/{err['details']['session_id']}")
    assert s["status"] == "crashed" and s["last_error"]
    assert await active_ids(client) == []


async def test_cached_library_is_loaded_at_session_start(client, api, worktree, settings):
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    (settings.cache_dir / "lodash-4.17.21.js").write_text("var _ = { fake: function () { return 'lo'; } };")
    tpl = await api.template()
    await client.post(f"/api/v1/templates/{tpl['id']}/libraries", json={"name": "lodash-4.17.21"})
    s = await api.session(tpl["id"])
    assert s["runtime_meta"]["libraries"] == ["lodash-4.17.21"]
    assert (await api.value(s["id"], "_.fake()"))["json"] == "lo"


# ---------------------------------------------------------------- list and get


async def test_list_sessions_newest_first_with_filters(client, api):
    assert await (await client.get("/api/v1/sessions")).read() == b"[]"
    t1, t2 = await api.template(), await api.template()
    a = await api.session(t1["id"])
    b = await api.session(t2["id"])
    c = await api.session(t1["id"])
    await client.post(f"/api/v1/sessions/{b['id']}/close")

    ids = [s["id"] for s in await get_json(client, "/api/v1/sessions")]
    assert ids == [c["id"], b["id"], a["id"]]
    ids = [s["id"] for s in await get_json(client, f"/api/v1/sessions?template_id={t1['id']}")]
    assert ids == [c["id"], a["id"]]
    ids = [s["id"] for s in await get_json(client, "/api/v1/sessions?status=ready")]
    assert ids == [c["id"], a["id"]]
    closed = await get_json(client, "/api/v1/sessions?status=closed")
    assert [(s["id"], s["status"]) for s in closed] == [(b["id"], "closed")]
    filtered = await get_json(client, f"/api/v1/sessions?status=closed&template_id={t1['id']}")
    assert filtered == []
    assert await get_json(client, "/api/v1/sessions?status=starting") == []

    err = await expect_error(await client.get("/api/v1/sessions?status=bogus"), 400, "VALIDATION_ERROR")
    assert "status" in err["message"]


async def test_get_unknown_or_malformed_session(client):
    err = await expect_error(await client.get(f"/api/v1/sessions/{MISSING}"), 404, "SESSION_NOT_FOUND")
    assert err["details"]["session_id"] == MISSING
    err = await expect_error(await client.get("/api/v1/sessions/xyz"), 400, "VALIDATION_ERROR")
    assert err["message"] == "session_id must be a valid UUID"


# ---------------------------------------------------------------- close


async def test_close_is_idempotent_and_delete_is_an_alias(client, api):
    s = await api.session()
    r = await client.post(f"/api/v1/sessions/{s['id']}/close")
    assert r.status == 200
    first = await r.json()
    assert first["id"] == s["id"] and first["status"] == "closed"
    assert TS_RE.match(first["closed_at"])

    r = await client.post(f"/api/v1/sessions/{s['id']}/close")
    assert r.status == 200
    second = await r.json()
    assert second["status"] == "closed" and second["closed_at"] == first["closed_at"]

    r = await client.delete(f"/api/v1/sessions/{s['id']}")
    assert r.status == 200
    assert (await r.json())["status"] == "closed"
    assert (await get_json(client, f"/api/v1/sessions/{s['id']}"))["status"] == "closed"

    other = await api.session()
    r = await client.delete(f"/api/v1/sessions/{other['id'].upper()}")
    assert r.status == 200
    body = await r.json()
    assert (body["id"], body["status"]) == (other["id"], "closed")
    assert TS_RE.match(body["closed_at"])
    assert await active_ids(client) == []


async def test_closed_session_refuses_executions(client, api, worktree):
    s = await api.session()
    await client.post(f"/api/v1/sessions/{s['id']}/close")
    status, body = await api.repl(s["id"], "1")
    assert status == 409 and body["error"]["code"] == "SESSION_NOT_READY"
    assert body["error"]["details"]["session_id"] == s["id"]
    (worktree / "f.js").write_text("1")
    r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": "f.js"})
    await expect_error(r, 409, "SESSION_NOT_READY")
    assert await get_json(client, f"/api/v1/executions?session_id={s['id']}") == []


async def test_close_unknown_or_malformed_session(client):
    for method, path in (
        ("POST", f"/api/v1/sessions/{MISSING}/close"),
        ("DELETE", f"/api/v1/sessions/{MISSING}"),
    ):
        await expect_error(await client.request(method, path), 404, "SESSION_NOT_FOUND")
    r = await client.post("/api/v1/sessions/abc/close")
    err = await expect_error(r, 400, "VALIDATION_ERROR")
    assert err["message"] == "session_id must be a valid UUID"


async def test_closing_a_crashed_session_answers_200(client, api, worktree):
    tpl = await api.template()
    (worktree / "boom.js").write_text("throw 1")
    await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "boom.js"})
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    sid = (await expect_error(r, 422, "STARTUP_FAILED"))["details"]["session_id"]
    r = await client.post(f"/api/v1/sessions/{sid}/close")
    assert r.status == 200
    closed = await r.json()
    assert closed["status"] == "closed"
    assert TS_RE.match(closed["closed_at"])
    assert "startup file" in closed["last_error"]
    assert (await get_json(client, f"/api/v1/sessions/{sid}"))["status"] == "closed"


async def test_closing_a_session_cancels_its_running_execution(client, api):
    s = await api.session()
    status, running = await api.repl(s["id"], "await new Promise(r => setTimeout(r, 60000))", wait=False)
    assert status == 202 and running["status"] == "running"
    r = await client.post(f"/api/v1/sessions/{s['id']}/close")
    assert r.status == 200 and (await r.json())["status"] == "closed"
    ex = await get_json(client, f"/api/v1/executions/{running['id']}")
    assert ex["status"] == "cancelled"
    assert ex["ended_at"] is not None
    events = await get_json(client, f"/api/v1/executions/{running['id']}/events")
    assert events[-1]["type"] == "system"


async def test_too_many_sessions_is_503_and_closing_frees_a_slot(aiohttp_client, settings, worktree):
    client = await aiohttp_client(create_app(dataclasses.replace(settings, max_sessions=1)))
    tpl = await (await client.post("/api/v1/templates", json={"name": "t"})).json()
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    assert r.status == 201
    first = await r.json()
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    await expect_error(r, 503, "TOO_MANY_SESSIONS")
    assert [s["id"] for s in await get_json(client, "/api/v1/sessions")] == [first["id"]]
    await client.post(f"/api/v1/sessions/{first['id']}/close")
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    assert r.status == 201
