"""Execution routes (API.md sections 3-6): REPL, run-file, history, events, cancel, busy."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from tests.conftest import MISSING, TS_RE, expect_error, get_json, history

EXECUTION_KEYS = {
    "id",
    "session_id",
    "kind",
    "input",
    "path",
    "args",
    "env",
    "status",
    "started_at",
    "ended_at",
    "result",
    "error",
    "metrics",
}
FOREVER = "await new Promise(r => setTimeout(r, 600000))"


async def until_ended(client: Any, execution_id: str) -> dict[str, Any]:
    for _ in range(1000):
        ex = await get_json(client, f"/api/v1/executions/{execution_id}")
        if ex["status"] != "running":
            return ex
        await asyncio.sleep(0.01)
    raise AssertionError(f"execution {execution_id} never ended")


async def run_file(client: Any, session_id: str, path: str, **extra: Any) -> Any:
    return await client.post(
        "/api/v1/executions/run-file", json={"session_id": session_id, "path": path, **extra}
    )


# ---------------------------------------------------------------- REPL


async def test_repl_response_shape(client, api):
    s = await api.session()
    r = await client.post(
        "/api/v1/executions/repl", json={"session_id": s["id"], "input": "console.log('hi'); 6 * 7"}
    )
    assert r.status == 201
    ex = await r.json()
    assert set(ex) == EXECUTION_KEYS | {"events"}
    assert str(uuid.UUID(ex["id"])) == ex["id"]
    assert ex["session_id"] == s["id"]
    assert (ex["kind"], ex["status"], ex["input"], ex["path"]) == (
        "repl",
        "ok",
        "console.log('hi'); 6 * 7",
        None,
    )
    assert ex["args"] == {} and ex["env"] == {}
    assert ex["result"] == {"type": "number", "preview": "42", "json": 42}
    assert ex["error"] is None
    assert TS_RE.match(ex["started_at"]) and TS_RE.match(ex["ended_at"])
    assert {"wall_ms", "cpu_ms", "event_count", "output_bytes"} <= set(ex["metrics"])
    assert ex["metrics"]["event_count"] == 3

    events = ex["events"]
    assert [e["type"] for e in events] == ["input_echo", "console", "value"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    for e in events:
        assert set(e) == {"id", "execution_id", "seq", "ts", "type", "payload"}
        assert e["execution_id"] == ex["id"]
    assert events[0]["payload"] == {"text": "console.log('hi'); 6 * 7"}
    assert events[1]["payload"] == {"level": "log", "text": "hi"}
    assert events[2]["payload"] == ex["result"]

    stored = await get_json(client, f"/api/v1/executions/{ex['id']}")
    assert stored == {k: v for k, v in ex.items() if k != "events"}


async def test_repl_exception_is_an_error_execution_not_an_http_error(client, api):
    s = await api.session()
    status, ex = await api.repl(s["id"], "undefinedThing")
    assert status == 201
    assert ex["status"] == "error" and ex["result"] is None
    assert ex["error"]["message"].startswith("ReferenceError")
    assert [e["type"] for e in ex["events"]] == ["input_echo", "exception"]


async def test_event_ids_increase_across_executions(client, api):
    s = await api.session()
    _, first = await api.repl(s["id"], "1")
    _, second = await api.repl(s["id"], "2")
    ids = [e["id"] for e in first["events"] + second["events"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_repl_request_validation(client, api):
    s = await api.session()
    for body in (
        {"session_id": s["id"]},
        {"session_id": s["id"], "input": ""},
        {"session_id": s["id"], "input": None},
        {"input": "1"},
        {"session_id": "", "input": "1"},
    ):
        r = await client.post("/api/v1/executions/repl", json=body)
        assert r.status == 400, body
        await expect_error(r, 400, "VALIDATION_ERROR")
    for body in (
        {"session_id": s["id"], "input": 1},
        {"session_id": s["id"], "input": "1", "wait": "false"},
        {"session_id": s["id"], "input": "1", "wait": 0},
        {"session_id": s["id"], "input": "1", "timeout": 5},
        {"session_id": s["id"], "Input": "1"},
    ):
        r = await client.post("/api/v1/executions/repl", json=body)
        assert r.status == 400, body
        await expect_error(r, 400, "INVALID_REQUEST")
    r = await client.post("/api/v1/executions/repl", data=b"null")
    await expect_error(r, 400, "VALIDATION_ERROR")
    err = await expect_error(
        await client.post("/api/v1/executions/repl", json={"session_id": MISSING, "input": "1"}),
        404,
        "SESSION_NOT_FOUND",
    )
    assert err["details"]["session_id"] == MISSING
    assert await history(client, s["id"]) == []


async def test_repl_without_waiting_is_202_and_finishes_later(client, api):
    s = await api.session()
    r = await client.post(
        "/api/v1/executions/repl",
        json={
            "session_id": s["id"],
            "input": "await new Promise(r => setTimeout(r, 20)); 'late'",
            "wait": False,
        },
    )
    assert r.status == 202
    ex = await r.json()
    assert "events" not in ex
    assert ex["status"] == "running" and ex["kind"] == "repl"
    done = await until_ended(client, ex["id"])
    assert done["status"] == "ok" and done["result"]["json"] == "late"
    events = await get_json(client, f"/api/v1/executions/{ex['id']}/events")
    assert [e["type"] for e in events] == ["input_echo", "value"]


# ---------------------------------------------------------------- busy and cancel


async def test_second_execution_while_busy_is_409_and_cancel_frees_the_session(client, api, worktree):
    s = await api.session()
    status, running = await api.repl(s["id"], FOREVER, wait=False)
    assert status == 202
    status, body = await api.repl(s["id"], "1")
    assert status == 409, body
    assert body["error"]["code"] == "SESSION_BUSY"
    assert body["error"]["details"]["running_execution_id"] == running["id"]
    (worktree / "f.js").write_text("1")
    r = await run_file(client, s["id"], "f.js")
    err = await expect_error(r, 409, "SESSION_BUSY")
    assert err["details"]["running_execution_id"] == running["id"]
    assert [e["id"] for e in await history(client, s["id"])] == [running["id"]]
    summary = await get_json(client, "/api/v1/runtime/summary")
    assert summary["running_executions"] == 1

    r = await client.post(f"/api/v1/executions/{running['id'].upper()}/cancel")
    assert r.status == 200
    cancelled = await r.json()
    assert cancelled["id"] == running["id"]
    assert cancelled["status"] == "cancelled"
    assert TS_RE.match(cancelled["ended_at"])
    assert cancelled["error"]["code"]
    events = await get_json(client, f"/api/v1/executions/{running['id']}/events")
    assert events[-1]["type"] == "system"

    r = await client.post(f"/api/v1/executions/{running['id']}/cancel")
    err = await expect_error(r, 409, "EXECUTION_NOT_RUNNING")
    assert err["details"]["execution_id"] == running["id"]

    assert (await get_json(client, f"/api/v1/sessions/{s['id']}"))["status"] == "ready"
    assert (await api.value(s["id"], "'free'"))["json"] == "free"
    assert (await get_json(client, "/api/v1/runtime/summary"))["running_executions"] == 0


async def test_cancel_of_an_ended_unknown_or_malformed_execution(client, api):
    s = await api.session()
    _, done = await api.repl(s["id"], "1")
    err = await expect_error(
        await client.post(f"/api/v1/executions/{done['id']}/cancel"), 409, "EXECUTION_NOT_RUNNING"
    )
    assert err["details"]["execution_id"] == done["id"]
    assert (await get_json(client, f"/api/v1/executions/{done['id']}"))["status"] == "ok"
    err = await expect_error(
        await client.post(f"/api/v1/executions/{MISSING}/cancel"), 404, "EXECUTION_NOT_FOUND"
    )
    assert err["details"]["execution_id"] == MISSING
    err = await expect_error(await client.post("/api/v1/executions/zzz/cancel"), 400, "VALIDATION_ERROR")
    assert err["message"] == "execution_id must be a valid UUID"


# ---------------------------------------------------------------- run-file


async def test_run_file_sees_args_and_env_and_stores_the_cleaned_path(client, api, worktree):
    (worktree / "b.js").write_text(
        "console.log(__ENV__.MODE); ({ sum: __ARGS__.a + __ARGS__.b, keys: Object.keys(__ENV__) })"
    )
    s = await api.session()
    r = await run_file(client, s["id"], "./a/../b.js", args={"a": 40, "b": 2}, env={"MODE": "test"})
    assert r.status == 201, await r.text()
    ex = await r.json()
    assert set(ex) == EXECUTION_KEYS | {"events"}
    assert (ex["kind"], ex["status"], ex["path"], ex["input"]) == ("run_file", "ok", "b.js", None)
    assert ex["args"] == {"a": 40, "b": 2} and ex["env"] == {"MODE": "test"}
    assert ex["result"]["json"] == {"sum": 42, "keys": ["MODE"]}
    assert [e["type"] for e in ex["events"]] == ["console", "value"]
    assert ex["events"][0]["payload"]["text"] == "test"
    stored = await get_json(client, f"/api/v1/executions/{ex['id']}")
    assert (stored["path"], stored["args"], stored["env"]) == ("b.js", {"a": 40, "b": 2}, {"MODE": "test"})


async def test_run_file_args_and_env_default_to_empty_objects(client, api, worktree):
    (worktree / "d.js").write_text("JSON.stringify([__ARGS__, __ENV__])")
    s = await api.session()
    r = await run_file(client, s["id"], "d.js")
    ex = await r.json()
    assert r.status == 201 and ex["status"] == "ok"
    assert ex["result"]["json"] == "[{},{}]"
    assert ex["args"] == {} and ex["env"] == {}


async def test_run_file_shares_state_with_the_repl(client, api, worktree):
    (worktree / "lib.js").write_text("var fromFile = 41;")
    s = await api.session()
    assert (await run_file(client, s["id"], "lib.js")).status == 201
    assert (await api.value(s["id"], "fromFile + 1"))["json"] == 42


async def test_run_file_path_errors_create_no_execution(client, api, worktree, tmp_path):
    outside = tmp_path / "outside.js"
    outside.write_text("'secret'")
    os.symlink(outside, worktree / "escape.js")
    os.symlink(tmp_path, worktree / "up")
    (worktree / "dir").mkdir()
    s = await api.session()
    for path in (
        "/etc/hostname",
        str(outside),
        "../outside.js",
        "a/../../outside.js",
        "escape.js",
        "up/outside.js",
    ):
        r = await run_file(client, s["id"], path)
        assert r.status == 422, path
        await expect_error(r, 422, "INVALID_PATH")
    for path in ("missing.js", "dir", "dir/nothing.js"):
        r = await run_file(client, s["id"], path)
        assert r.status == 404, path
        err = await expect_error(r, 404, "FILE_NOT_FOUND")
        assert path in err["message"]
    for body in ({"path": ""}, {"path": None}, {}):
        r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], **body})
        await expect_error(r, 400, "VALIDATION_ERROR")
    for extra in ({"args": [1]}, {"args": "x"}, {"env": {"A": 1}}, {"env": ["A"]}, {"wait": "no"}):
        r = await run_file(client, s["id"], "x.js", **extra)
        assert r.status == 400, extra
        await expect_error(r, 400, "INVALID_REQUEST")
    assert await history(client, s["id"]) == []
    assert (await get_json(client, f"/api/v1/sessions/{s['id']}"))["status"] == "ready"


async def test_run_file_without_waiting(client, api, worktree):
    (worktree / "w.js").write_text("__ARGS__.n * 2")
    s = await api.session()
    r = await run_file(client, s["id"], "w.js", args={"n": 21}, wait=False)
    assert r.status == 202
    ex = await r.json()
    assert ex["status"] == "running" and "events" not in ex
    done = await until_ended(client, ex["id"])
    assert done["status"] == "ok" and done["result"]["json"] == 42


# ---------------------------------------------------------------- history


async def test_executions_list_newest_first_with_limit(client, api):
    s = await api.session()
    assert await (await client.get("/api/v1/executions", params={"session_id": s["id"]})).read() == b"[]"
    ids = [(await api.repl(s["id"], str(i)))[1]["id"] for i in range(5)]
    listed = await history(client, s["id"])
    assert [e["id"] for e in listed] == ids[::-1]
    assert all(set(e) == EXECUTION_KEYS for e in listed)
    assert [e["id"] for e in await history(client, s["id"], limit=2)] == ids[:2:-1]
    assert len(await history(client, s["id"], limit=1000)) == 5
    assert len(await history(client, s["id"], limit=1)) == 1

    other = await api.session()
    assert await history(client, other["id"]) == []


async def test_executions_list_pages_with_a_before_cursor(client, api):
    s = await api.session()
    ids = [(await api.repl(s["id"], str(i)))[1]["id"] for i in range(7)]
    pages, before = [], None
    while True:
        page = await history(client, s["id"], limit=3, **({"before": before} if before else {}))
        if not page:
            break
        pages.append([e["id"] for e in page])
        before = page[-1]["id"]
    assert pages == [ids[6:3:-1], ids[3:0:-1], ids[0:1]]  # newest first, each once, none skipped
    # A cursor that is not an execution of this session is an error, not an empty page.
    other = await api.session()
    foreign = (await api.repl(other["id"], "1"))[1]["id"]
    for bad in (foreign, MISSING):
        r = await client.get("/api/v1/executions", params={"session_id": s["id"], "before": bad})
        err = await expect_error(r, 400, "VALIDATION_ERROR")
        assert f"before={bad} is not an execution of session {s['id']}" in err["message"]
    r = await client.get("/api/v1/executions", params={"session_id": s["id"], "before": "nope"})
    assert "before execution" in (await expect_error(r, 400, "VALIDATION_ERROR"))["message"]


async def test_executions_list_parameter_errors(client, api):
    s = await api.session()
    for limit in ("0", "1001", "x", "-1", "1.5", ""):
        r = await client.get("/api/v1/executions", params={"session_id": s["id"], "limit": limit})
        if limit == "":
            assert r.status == 200  # empty means "default"
            continue
        assert r.status == 400, limit
        err = await expect_error(r, 400, "VALIDATION_ERROR")
        assert "limit" in err["message"]
    await expect_error(await client.get("/api/v1/executions"), 400, "VALIDATION_ERROR")
    err = await expect_error(
        await client.get("/api/v1/executions", params={"session_id": "bad"}), 400, "VALIDATION_ERROR"
    )
    assert err["message"] == "session_id must be a valid UUID"
    err = await expect_error(
        await client.get("/api/v1/executions", params={"session_id": MISSING}), 404, "SESSION_NOT_FOUND"
    )
    assert err["details"]["session_id"] == MISSING


async def test_get_execution_errors(client):
    err = await expect_error(await client.get(f"/api/v1/executions/{MISSING}"), 404, "EXECUTION_NOT_FOUND")
    assert err["details"]["execution_id"] == MISSING
    for path in ("/api/v1/executions/repl", "/api/v1/executions/nope"):
        err = await expect_error(await client.get(path), 400, "VALIDATION_ERROR")
        assert err["message"] == "execution_id must be a valid UUID"


# ---------------------------------------------------------------- events


async def test_events_cursor_and_limit(client, api):
    s = await api.session()
    _, ex = await api.repl(s["id"], "for (let i = 0; i < 5; i++) console.log('line', i); 'end'")
    path = f"/api/v1/executions/{ex['id']}/events"
    events = await get_json(client, path)
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert events == ex["events"]
    assert [e["payload"]["text"] for e in events[1:6]] == [f"line {i}" for i in range(5)]

    assert [e["seq"] for e in await get_json(client, f"{path}?after_seq=3")] == [4, 5, 6, 7]
    assert [e["seq"] for e in await get_json(client, f"{path}?after_seq=3&limit=2")] == [4, 5]
    assert [e["seq"] for e in await get_json(client, f"{path}?limit=1")] == [1]
    assert [e["seq"] for e in await get_json(client, f"{path}?after_seq=0&limit=10000")] == list(range(1, 8))
    r = await client.get(f"{path}?after_seq=7")
    assert r.status == 200 and await r.read() == b"[]"
    assert await get_json(client, f"{path}?after_seq=1000") == []

    for query in ("after_seq=-1", "after_seq=x", "limit=0", "limit=10001", "limit=x", "after_seq=1.5"):
        r = await client.get(f"{path}?{query}")
        assert r.status == 400, query
        await expect_error(r, 400, "VALIDATION_ERROR")
    err = await expect_error(
        await client.get(f"/api/v1/executions/{MISSING}/events"), 404, "EXECUTION_NOT_FOUND"
    )
    assert err["details"]["execution_id"] == MISSING
    await expect_error(
        await client.get(f"/api/v1/executions/{MISSING}/events?after_seq=5"), 404, "EXECUTION_NOT_FOUND"
    )


async def test_event_cursor_rejects_out_of_range_and_non_decimal_values(client, api):
    s = await api.session()
    _, ex = await api.repl(s["id"], "1")
    for query in ("after_seq=99999999999999999999999", "after_seq=%201", "limit=1_0", "after_seq=%EF%BC%91"):
        r = await client.get(f"/api/v1/executions/{ex['id']}/events?{query}")
        assert r.status == 400, query
        await expect_error(r, 400, "VALIDATION_ERROR")
