"""Malformed input never breaks anything: every bad body, path, cursor and file is a 4xx envelope.

Lone UTF-16 surrogates, NUL characters, deep nesting, huge integers, bad encodings, looping
and over-long paths, oversized files, out-of-range WebSocket cursors; on SQLite and on the
real PostgreSQL (which refuses NUL in text and JSON, so a NUL that slipped through would 500).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.config import Settings
from tests.conftest import Api, expect_error, session_body

SURROGATE = '"\\ud800"'  # an escaped lone surrogate, exactly as a client would send it


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_settings(request: Any, tmp_path: Path) -> Settings:
    db = str(tmp_path / "vm.db") if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    return Settings.from_env({}, db_url=db, cache_dir=str(tmp_path / "cache"))


@pytest.fixture
async def ctx(aiohttp_client: Any, backend_settings: Settings, worktree: Path) -> dict[str, Any]:
    client = await aiohttp_client(create_app(backend_settings))
    api = Api(client, worktree)
    tpl = await api.template()
    s = await api.session(tpl["id"])
    return {"client": client, "api": api, "tid": tpl["id"], "sid": s["id"], "worktree": worktree}


def _bodies(tid: str, sid: str, wt: Path, bad: str) -> list[tuple[str, str, str, str]]:
    """(method, path, raw JSON body, field named in the error) with ``bad`` in one string field."""
    t = f"/api/v1/templates/{tid}"
    session = '{"template_id": "%s", "workspace_id": %s, "base_commit_oid": %s, "worktree_path": "%s"}'
    return [
        ("POST", "/api/v1/templates", f'{{"name": {bad}}}', "name"),
        ("POST", "/api/v1/templates", f'{{"name": "n", "engine": {bad}}}', "engine"),
        ("PATCH", t, f'{{"name": {bad}}}', "name"),
        ("PATCH", t, f'{{"settings": {{"resolver": {{"roots": [{bad}]}}}}}}', "settings.resolver.roots.0"),
        ("POST", f"{t}/capabilities", f'{{"kind": {bad}, "name": "x"}}', "kind"),
        (
            "POST",
            f"{t}/capabilities",
            f'{{"kind": "env", "name": "x", "config": {{"k": {bad}}}}}',
            "config.k",
        ),
        ("POST", f"{t}/startup-files", f'{{"path": "a.js", "mode": {bad}}}', "mode"),
        ("POST", f"{t}/modules", f'{{"name": {bad}}}', "name"),
        ("POST", f"{t}/libraries", f'{{"name": {bad}}}', "name"),
        ("POST", "/api/v1/sessions", session % (tid, bad, '"c"', wt), "workspace_id"),
        ("POST", "/api/v1/sessions", session % (tid, '"w"', bad, wt), "base_commit_oid"),
        ("POST", "/api/v1/executions/repl", f'{{"session_id": "{sid}", "input": {bad}}}', "input"),
        (
            "POST",
            "/api/v1/executions/run-file",
            f'{{"session_id": "{sid}", "path": "a.js", "args": {{"x": [{bad}]}}}}',
            "args.x.0",
        ),
        (
            "POST",
            "/api/v1/executions/run-file",
            f'{{"session_id": "{sid}", "path": "a.js", "env": {{"HOME": {bad}}}}}',
            "env.HOME",
        ),
    ]


async def _nothing_was_stored(c: dict[str, Any]) -> None:
    client = c["client"]
    assert len(await (await client.get("/api/v1/templates")).json()) == 1
    detail = await (await client.get(f"/api/v1/templates/{c['tid']}")).json()
    assert detail["capabilities"] == [] and detail["startup_files"] == []
    assert detail["settings"]["resolver"]["roots"] == ["."]
    assert len(await (await client.get("/api/v1/sessions")).json()) == 1
    assert await (await client.get(f"/api/v1/executions?session_id={c['sid']}")).json() == []


async def test_lone_surrogates_in_any_body_field_are_400_naming_the_field(ctx):
    (ctx["worktree"] / "a.js").write_text("1")
    for method, path, body, field in _bodies(ctx["tid"], ctx["sid"], ctx["worktree"], SURROGATE):
        r = await ctx["client"].request(method, path, data=body.encode())
        err = await expect_error(r, 400, "INVALID_REQUEST")
        assert err["details"]["field"] == field, (path, body)
        assert "surrogate" in err["message"] and repr(field) in err["message"]
    await _nothing_was_stored(ctx)


async def test_nul_in_any_string_field_is_refused_before_the_store(ctx):
    (ctx["worktree"] / "a.js").write_text("1")
    for method, path, body, field in _bodies(ctx["tid"], ctx["sid"], ctx["worktree"], '"a\\u0000b"'):
        r = await ctx["client"].request(method, path, data=body.encode())
        err = await expect_error(r, 400, "VALIDATION_ERROR")
        assert err["details"]["field"] == field and "NUL" in err["message"], (path, body)
    # Keys too, however deep.
    r = await ctx["client"].post(
        "/api/v1/executions/run-file",
        data=f'{{"session_id": "{ctx["sid"]}", "path": "a.js", "args": {{"a": {{"b\\u0000": 1}}}}}}',
    )
    assert (await expect_error(r, 400, "VALIDATION_ERROR"))["details"]["field"] == "args.a.b\x00"
    await _nothing_was_stored(ctx)
    # The session still works.
    assert (await ctx["api"].value(ctx["sid"], "6*7"))["json"] == 42


async def test_deep_nesting_huge_integers_and_infinities_are_400(ctx):
    c, sid = ctx["client"], ctx["sid"]
    (ctx["worktree"] / "a.js").write_text("1")
    run = f'{{"session_id": "{sid}", "path": "a.js", "args": {{"x": %s}}}}'
    cases = [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # deeper than the parser goes
        (run % ("[" * 100 + "]" * 100), "nested deeper than 64"),  # deeper than any store keeps
        (run % "123456789012345678901234567890", "outside ±(2^53-1)"),
        (run % "-9007199254740992", "outside ±(2^53-1)"),
        (run % "1e999", "not a finite number"),
    ]
    for body, words in cases:
        r = await c.post("/api/v1/executions/run-file", data=body.encode())
        assert words in (await expect_error(r, 400, "INVALID_REQUEST"))["message"]
    r = await c.patch(
        f"/api/v1/templates/{ctx['tid']}",
        data=b'{"settings": {"limits": {"cpu_ms": 123456789012345678901234567890}}}',
    )
    await expect_error(r, 400, "INVALID_REQUEST")
    r = await c.post(
        f"/api/v1/templates/{ctx['tid']}/startup-files", data=b'{"path": "a.js", "order_index": 1e400}'
    )
    await expect_error(r, 400, "INVALID_REQUEST")
    await _nothing_was_stored(ctx)
    # The largest exact integer goes through to JavaScript intact.
    r = await c.post("/api/v1/executions/repl", json={"session_id": sid, "input": "9007199254740991"})
    assert r.status == 201


async def test_a_body_that_cannot_be_decoded_is_400_and_the_server_carries_on(client):
    r = await client.post(
        "/api/v1/templates", data=b'{"name": "not gzip"}', headers={"Content-Encoding": "gzip"}
    )
    assert "content-encoding" in (await expect_error(r, 400, "INVALID_REQUEST"))["message"]
    assert r.headers.get("Connection", "").lower() == "close"
    assert await (await client.get("/api/v1/templates")).json() == []


async def test_looping_and_over_long_paths_are_4xx(ctx):
    c, sid, wt = ctx["client"], ctx["sid"], ctx["worktree"]
    os.symlink("loop", wt / "loop")
    r = await c.post("/api/v1/executions/run-file", json={"session_id": sid, "path": "loop"})
    assert "loop" in (await expect_error(r, 422, "INVALID_PATH"))["message"]
    r = await c.post("/api/v1/executions/run-file", json={"session_id": sid, "path": "x" * 300 + ".js"})
    assert "too long" in (await expect_error(r, 422, "INVALID_PATH"))["message"]
    deep = wt / "d"
    deep.mkdir()
    r = await c.post("/api/v1/executions/run-file", json={"session_id": sid, "path": "d/" * 3000 + "x.js"})
    assert r.status in (404, 422)
    await expect_error(r, r.status, "FILE_NOT_FOUND" if r.status == 404 else "INVALID_PATH")
    for path in (str(wt / "loop"), "/" + "a" * 5000, str(wt / ("b" * 300))):
        r = await c.post("/api/v1/sessions", json=session_body(ctx["tid"], path))
        await expect_error(r, 422, "INVALID_PATH")
    await _nothing_was_stored(ctx)


async def test_files_over_max_file_bytes_are_413_without_an_execution(aiohttp_client, settings, worktree):
    client = await aiohttp_client(create_app(replace(settings, max_file_bytes=1000)))
    api = Api(client, worktree)
    (worktree / "small.js").write_text("'x'.repeat(10)")
    (worktree / "big.js").write_text("// " + "x" * 2000)
    s = await api.session()
    r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": "big.js"})
    err = await expect_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert "1000" in err["message"] and "big.js" in err["message"]
    r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": "small.js"})
    assert r.status == 201 and (await r.json())["status"] == "ok"
    assert len(await (await client.get(f"/api/v1/executions?session_id={s['id']}")).json()) == 1
    # A startup file over the cap: the session is refused the same way.
    tpl = await api.template()
    r = await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "big.js"})
    assert r.status == 201
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    await expect_error(r, 413, "PAYLOAD_TOO_LARGE")


async def test_websocket_cursors_have_the_rest_bounds(api):
    s = await api.session()
    _, ex = await api.repl(s["id"], "1")
    ws = await api.client.ws_connect("/api/v1/ws")
    for n, (key, target, value) in enumerate(
        [
            ("after_seq", "execution_id", 2**63),
            ("after_seq", "execution_id", -1),
            ("after_seq", "execution_id", True),
            ("after_seq", "execution_id", "5"),
            ("after_id", "session_id", 2**63),
            ("after_id", "session_id", 1.5),
        ]
    ):
        ident = ex["id"] if target == "execution_id" else s["id"]
        await ws.send_json({"type": "subscribe", "id": n, target: ident, key: value})
        msg = await ws.receive_json()
        assert msg["type"] == "error" and msg["reply_to"] == n, msg
        assert msg["error"]["code"] == "VALIDATION_ERROR" and key in msg["error"]["message"], msg
    # The largest cursor is valid (and past everything).
    await ws.send_json({"type": "subscribe", "id": 99, "execution_id": ex["id"], "after_seq": 2**63 - 1})
    assert (await ws.receive_json())["type"] == "subscribed"
    # A lone surrogate in a message is refused and the socket stays open.
    await ws.send_str(f'{{"type": "execute", "id": 100, "session_id": "{s["id"]}", "input": "\\udc00"}}')
    while (msg := await ws.receive_json())["type"] != "error":
        pass
    assert msg["error"]["code"] == "INVALID_REQUEST"
    await ws.send_json({"type": "ping", "id": 101})
    # (The subscription above may still be delivering its ended execution meanwhile.)
    while (msg := await ws.receive_json())["type"] != "pong":
        assert msg["type"] in ("execution", "complete") and msg.get("subscription"), msg
    assert msg["reply_to"] == 101
    await ws.close()
