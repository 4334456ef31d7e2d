"""REST conventions (API.md sections 1-3): strict decoding, ids, the error envelope, 404/405/413,
HEAD, X-Request-Id, timestamps, catalogs and the OpenAPI document."""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

from server.app import create_app
from server.store.store import Store
from tests.conftest import MISSING, TS_RE, expect_error, session_body


async def templates(client: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/templates")
    assert r.status == 200
    return await r.json()


# ---------------------------------------------------------------- strict decoding


UNDECODABLE = [
    b"",
    b"   \n",
    b"{",
    b'{"name": "a",}',
    b"{'name': 'a'}",
    b'{"name": "a"} {}',
    b'{"name": "a"}x',
    b"[]",
    b'[{"name": "a"}]',
    b'"a"',
    b"42",
    b"true",
    b'{"name": NaN}',
    b'{"name": "\xff\xfe"}',
    b'{"name": 123}',
    b'{"name": ["a"]}',
    b'{"name": {"x": 1}}',
    b'{"name": true}',
    b'{"name": "a", "engine": 1}',
    b'{"name": "a", "name": "b"}',
    b'{"Name": "a"}',
    b'{"name": "a", "NAME": "b"}',
    b'{"name": "a", "colour": "red"}',
]


async def test_undecodable_or_mistyped_body_is_invalid_request_and_creates_nothing(client):
    for raw in UNDECODABLE:
        r = await client.post("/api/v1/templates", data=raw)
        assert r.status == 400, raw
        await expect_error(r, 400, "INVALID_REQUEST")
    assert await templates(client) == []


async def test_null_body_or_missing_required_field_is_validation_error(client):
    for raw in [b"null", b" null ", b"{}", b'{"name": null}', b'{"name": ""}', b'{"engine": "quickjs"}']:
        r = await client.post("/api/v1/templates", data=raw)
        assert r.status == 400, raw
        await expect_error(r, 400, "VALIDATION_ERROR")
    assert await templates(client) == []


async def test_unknown_field_is_named_in_the_message(client):
    r = await client.post("/api/v1/templates", json={"name": "a", "colour": "red"})
    err = await expect_error(r, 400, "INVALID_REQUEST")
    assert "colour" in err["message"]
    r = await client.post("/api/v1/templates", json={"Name": "a"})
    err = await expect_error(r, 400, "INVALID_REQUEST")
    assert "Name" in err["message"]


async def test_duplicate_key_is_named_in_the_message(client):
    r = await client.post("/api/v1/templates", data=b'{"name": "a", "name": "a"}')
    err = await expect_error(r, 400, "INVALID_REQUEST")
    assert "name" in err["message"]


async def test_content_type_is_not_required(client):
    r = await client.post(
        "/api/v1/templates", data=b'{"name": "plain"}', headers={"Content-Type": "text/plain"}
    )
    assert r.status == 201, await r.text()
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"


WRONG_TYPES = [
    ("startup-files", {"path": "a.js", "order_index": "10"}),
    ("startup-files", {"path": "a.js", "order_index": True}),
    ("startup-files", {"path": "a.js", "order_index": 1.5}),
    ("startup-files", {"path": 7}),
    ("startup-files", {"path": "a.js", "mode": ["eval"]}),
    ("capabilities", {"kind": "module", "name": "fs", "enabled": "true"}),
    ("capabilities", {"kind": "module", "name": "fs", "enabled": 1}),
    ("capabilities", {"kind": "module", "name": "fs", "config": []}),
    ("capabilities", {"kind": "module", "name": "fs", "config": "{}"}),
    ("modules", {"name": 1}),
    ("libraries", {"name": ["lodash-4.17.21"]}),
]


async def test_wrong_json_type_on_sub_resources_is_invalid_request(client, api):
    tpl = await api.template()
    for path, body in WRONG_TYPES:
        r = await client.post(f"/api/v1/templates/{tpl['id']}/{path}", json=body)
        assert r.status == 400, body
        await expect_error(r, 400, "INVALID_REQUEST")
        r = await client.get(f"/api/v1/templates/{tpl['id']}/{path}")
        assert await r.json() == []


async def test_out_of_range_integer_is_a_client_error_not_a_crash(client, api):
    tpl = await api.template()
    r = await client.post(
        f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "a.js", "order_index": 2**70}
    )
    assert r.status == 400, await r.text()
    r = await client.patch(f"/api/v1/templates/{tpl['id']}", json={"settings": {"limits": {"cpu_ms": 2**70}}})
    assert r.status == 400, await r.text()
    r = await client.get(f"/api/v1/templates/{tpl['id']}")
    assert (await r.json())["settings"]["limits"]["cpu_ms"] == 2000


async def test_body_over_the_limit_is_413_and_creates_nothing(client):
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    r = await client.post("/api/v1/templates", data=big)
    err = await expect_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert "limit" in err["message"]
    assert uuid.UUID(r.headers["X-Request-Id"])
    assert await templates(client) == []


async def test_body_just_under_the_limit_is_accepted(client):
    r = await client.post("/api/v1/templates", json={"name": "big-config"})
    tpl = await r.json()
    blob = "y" * (1024 * 1024 - 200)  # the body is just under 1 MiB
    r = await client.post(
        f"/api/v1/templates/{tpl['id']}/capabilities",
        json={"kind": "global", "name": "blob", "config": {"blob": blob}},
    )
    assert r.status == 201
    assert (await r.json())["config"]["blob"] == blob


# ---------------------------------------------------------------- ids


MALFORMED_READS = [
    ("/api/v1/templates/nope", "template"),
    ("/api/v1/templates/123/capabilities", "template"),
    ("/api/v1/templates/not-a-uuid/startup-files", "template"),
    ("/api/v1/templates/zz/modules", "template"),
    ("/api/v1/templates/zz/libraries", "template"),
    ("/api/v1/sessions/nope", "session"),
    ("/api/v1/executions/nope", "execution"),
    ("/api/v1/executions/nope/events", "execution"),
    ("/api/v1/executions/repl", "execution"),
    ("/api/v1/executions/run-file", "execution"),
    ("/api/v1/executions?session_id=nope", "session"),
    ("/api/v1/sessions?template_id=nope", "template"),
]


async def test_malformed_id_is_validation_error_naming_the_id(client):
    for path, kind in MALFORMED_READS:
        r = await client.get(path)
        assert r.status == 400, path
        err = await expect_error(r, 400, "VALIDATION_ERROR")
        assert err["message"] == f"{kind}_id must be a valid UUID"


MALFORMED_WRITES = [
    ("POST", "/api/v1/sessions/nope/close", "session"),
    ("DELETE", "/api/v1/sessions/nope", "session"),
    ("DELETE", "/api/v1/templates/nope", "template"),
    ("PATCH", "/api/v1/templates/nope", "template"),
    ("POST", "/api/v1/executions/nope/cancel", "execution"),
    ("POST", "/api/v1/templates/nope/modules", "template"),
    ("DELETE", "/api/v1/templates/nope/modules/fs", "template"),
    ("POST", "/api/v1/templates/nope/capabilities", "template"),
    ("POST", "/api/v1/templates/nope/startup-files", "template"),
    ("POST", "/api/v1/templates/nope/libraries", "template"),
    ("DELETE", "/api/v1/templates/nope/libraries/x", "template"),
    ("DELETE", f"/api/v1/templates/nope/capabilities/{MISSING}", "template"),
    ("DELETE", f"/api/v1/templates/nope/startup-files/{MISSING}", "template"),
]


async def test_malformed_id_on_writes_is_validation_error(client):
    for method, path, kind in MALFORMED_WRITES:
        r = await client.request(method, path, json={"name": "fs"})
        assert r.status == 400, (method, path)
        err = await expect_error(r, 400, "VALIDATION_ERROR")
        assert err["message"] == f"{kind}_id must be a valid UUID"


async def test_malformed_ids_in_bodies_are_validation_errors(client, api, worktree):
    r = await client.post("/api/v1/sessions", json=session_body("nope", worktree))
    err = await expect_error(r, 400, "VALIDATION_ERROR")
    assert err["message"] == "template_id must be a valid UUID"
    for route, body in [
        ("repl", {"session_id": "nope", "input": "1"}),
        ("run-file", {"session_id": "nope", "path": "a.js"}),
    ]:
        r = await client.post(f"/api/v1/executions/{route}", json=body)
        err = await expect_error(r, 400, "VALIDATION_ERROR")
        assert err["message"] == "session_id must be a valid UUID"


def id_forms(value: str) -> list[str]:
    u = uuid.UUID(value)
    return [value.upper(), u.hex, u.hex.upper(), "{" + value + "}", f"urn:uuid:{value}"]


async def test_ids_in_any_uuid_form_are_normalised_to_lowercase(client, api, worktree):
    tpl = await api.template()
    assert tpl["id"] == tpl["id"].lower()
    assert uuid.UUID(tpl["id"]).version == 4
    for form in id_forms(tpl["id"]):
        r = await client.get(f"/api/v1/templates/{form}")
        assert r.status == 200, (form, await r.text())
        assert (await r.json())["template"]["id"] == tpl["id"]
        r = await client.get(f"/api/v1/templates/{form}/modules")
        assert r.status == 200, form

    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"].upper(), worktree))
    assert r.status == 201, await r.text()
    session = await r.json()
    assert session["vm_id"] == tpl["id"]
    assert session["id"] == session["id"].lower()

    r = await client.get("/api/v1/sessions", params={"template_id": tpl["id"].upper()})
    assert [s["id"] for s in await r.json()] == [session["id"]]

    r = await client.post(
        "/api/v1/executions/repl", json={"session_id": uuid.UUID(session["id"]).hex.upper(), "input": "1"}
    )
    assert r.status == 201, await r.text()
    execution = await r.json()
    assert execution["session_id"] == session["id"]
    assert execution["id"] == execution["id"].lower()

    for form in id_forms(session["id"]):
        r = await client.get(f"/api/v1/sessions/{form}")
        assert (await r.json())["id"] == session["id"], form
        r = await client.get("/api/v1/executions", params={"session_id": form})
        assert [e["id"] for e in await r.json()] == [execution["id"]], form
    for form in id_forms(execution["id"]):
        r = await client.get(f"/api/v1/executions/{form}")
        assert (await r.json())["id"] == execution["id"], form
        r = await client.get(f"/api/v1/executions/{form}/events")
        assert [e["execution_id"] for e in await r.json()] == [execution["id"]] * 2, form


# ---------------------------------------------------------------- routes, methods, envelope


async def test_unknown_route_is_404_json_envelope_with_request_id(client):
    for path in ["/api/v1/nope", "/api/v1/templates/x/y/z", "/api/v1/", "/api/v1/sessions/a/b"]:
        r = await client.get(path)
        assert r.status == 404, path
        err = await expect_error(r, 404, "NOT_FOUND")
        assert set(err) == {"code", "message"}
        assert r.headers["Content-Type"].startswith("application/json")
        assert uuid.UUID(r.headers["X-Request-Id"])


WRONG_METHODS = [
    ("PUT", "/api/v1/templates", {"GET", "POST"}),
    ("DELETE", "/api/v1/health", {"GET"}),
    ("POST", "/api/v1/openapi.json", {"GET"}),
    ("PUT", f"/api/v1/templates/{MISSING}", {"GET", "PATCH", "DELETE"}),
    ("GET", f"/api/v1/sessions/{MISSING}/close", {"POST"}),
    ("PATCH", "/api/v1/executions/repl", {"POST"}),
    ("DELETE", f"/api/v1/executions/{MISSING}", {"GET"}),
]


async def test_wrong_method_is_405_with_allow_header(client):
    for method, path, allowed in WRONG_METHODS:
        r = await client.request(method, path)
        assert r.status == 405, (method, path)
        err = await expect_error(r, 405, "METHOD_NOT_ALLOWED")
        assert method in err["message"]
        listed = {m.strip() for m in r.headers["Allow"].split(",")}
        assert allowed <= listed, (path, listed)
        assert method not in listed
        assert uuid.UUID(r.headers["X-Request-Id"])


async def test_request_id_is_a_fresh_uuid_on_every_api_response(client, api):
    tpl = await api.template()
    responses = [
        await client.get("/api/v1/health"),
        await client.get("/api/v1/templates"),
        await client.get(f"/api/v1/templates/{tpl['id']}"),
        await client.get(f"/api/v1/templates/{MISSING}"),
        await client.get("/api/v1/templates/bad"),
        await client.post("/api/v1/templates", data=b"{"),
        await client.get("/api/v1/missing"),
        await client.delete("/api/v1/health"),
        await client.head("/api/v1/templates"),
        await client.get("/api/v1/openapi.json"),
    ]
    ids = [r.headers["X-Request-Id"] for r in responses]
    for rid in ids:
        assert str(uuid.UUID(rid)) == rid
    assert len(set(ids)) == len(ids)


async def test_envelope_details_name_the_ids_involved(client):
    r = await client.get(f"/api/v1/templates/{MISSING}")
    err = await expect_error(r, 404, "TEMPLATE_NOT_FOUND")
    assert err["details"]["template_id"] == MISSING
    r = await client.get(f"/api/v1/sessions/{MISSING.upper()}")
    err = await expect_error(r, 404, "SESSION_NOT_FOUND")
    assert err["details"]["session_id"] == MISSING
    r = await client.get(f"/api/v1/executions/{MISSING}/events")
    err = await expect_error(r, 404, "EXECUTION_NOT_FOUND")
    assert err["details"]["execution_id"] == MISSING


class FailingStore(Store):
    """A real store that fails when listing templates (to see how a 500 looks)."""

    async def list_templates(self):  # type: ignore[override]
        raise RuntimeError("SELECT * FROM templates -- /srv/secret/vm.db line 42")


async def test_internal_error_leaks_no_traceback_sql_or_paths(aiohttp_client, settings, caplog):
    client = await aiohttp_client(create_app(settings, store=FailingStore(settings.db_url)))
    r = await client.get("/api/v1/templates")
    err = await expect_error(r, 500, "INTERNAL")
    text = await r.text()
    for leak in ("SELECT", "/srv/secret", "Traceback", "RuntimeError", "line 42"):
        assert leak not in text
    rid = r.headers["X-Request-Id"]
    assert str(uuid.UUID(rid)) == rid
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert rid in err["message"]
    assert any(rid in rec.getMessage() for rec in caplog.records)
    # The server keeps serving.
    r = await client.post("/api/v1/templates", json={"name": "still-works"})
    assert r.status == 201


# ---------------------------------------------------------------- HEAD


async def test_head_works_wherever_get_does(client, api):
    s = await api.session()
    status, ex = await api.repl(s["id"], "1")
    tid = s["vm_id"]
    paths = [
        "/api/v1/health",
        "/api/v1/runtime/summary",
        "/api/v1/modules",
        "/api/v1/libraries",
        "/api/v1/templates",
        f"/api/v1/templates/{tid}",
        f"/api/v1/templates/{tid}/capabilities",
        f"/api/v1/templates/{tid}/startup-files",
        f"/api/v1/templates/{tid}/modules",
        f"/api/v1/templates/{tid}/libraries",
        "/api/v1/sessions",
        f"/api/v1/sessions/{s['id']}",
        f"/api/v1/executions?session_id={s['id']}",
        f"/api/v1/executions/{ex['id']}",
        f"/api/v1/executions/{ex['id']}/events",
        "/api/v1/openapi.json",
    ]
    for path in paths:
        r = await client.head(path)
        assert r.status == 200, path
        assert await r.read() == b"", path
        assert uuid.UUID(r.headers["X-Request-Id"])
    r = await client.head(f"/api/v1/templates/{MISSING}")
    assert r.status == 404
    r = await client.head("/api/v1/templates/bad")
    assert r.status == 400


# ---------------------------------------------------------------- ops and catalogs


async def test_health(client):
    r = await client.get("/api/v1/health")
    assert r.status == 200
    assert await r.json() == {"status": "ok"}


async def test_runtime_summary_shape(client, api):
    empty = await (await client.get("/api/v1/runtime/summary")).json()
    assert empty["active_sessions"] == 0
    assert empty["active_session_ids"] == []
    assert empty["running_executions"] == 0
    assert empty["engine"] == "quickjs"
    assert isinstance(empty["version"], str) and empty["version"]
    a, b = await api.session(), await api.session()
    summary = await (await client.get("/api/v1/runtime/summary")).json()
    assert summary["active_sessions"] == 2
    assert summary["active_session_ids"] == sorted([a["id"], b["id"]])


async def test_module_catalog(client):
    r = await client.get("/api/v1/modules")
    assert r.status == 200
    catalog = await r.json()
    by_name = {m["name"]: m for m in catalog}
    assert set(by_name) == {"fs", "database", "exec"}
    for m in catalog:
        assert set(m) == {"name", "description", "functions"}
        assert m["description"]
    assert by_name["fs"]["functions"] == ["readFileSync", "writeFileSync", "existsSync", "readdirSync"]
    assert by_name["database"]["functions"] == ["configure", "query", "exec", "close"]
    assert by_name["exec"]["functions"] == ["run"]


async def test_library_catalog_reports_cache_state(client, settings):
    catalog = await (await client.get("/api/v1/libraries")).json()
    assert catalog
    for lib in catalog:
        assert set(lib) == {"name", "id", "version", "global", "description", "cached"}
        assert lib["name"] == f"{lib['id']}-{lib['version']}"
        assert lib["cached"] is False
    assert "lodash-4.17.21" in {lib["name"] for lib in catalog}
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    (settings.cache_dir / "lodash-4.17.21.js").write_text("var _ = {};")
    catalog = await (await client.get("/api/v1/libraries")).json()
    assert {lib["name"]: lib["cached"] for lib in catalog}["lodash-4.17.21"] is True


# ---------------------------------------------------------------- timestamps


async def test_timestamps_are_rfc3339_utc_microseconds_and_stable(client, api):
    tpl = await api.template()
    assert TS_RE.match(tpl["created_at"]) and TS_RE.match(tpl["updated_at"])
    detail = await (await client.get(f"/api/v1/templates/{tpl['id']}")).json()
    assert detail["template"]["created_at"] == tpl["created_at"]
    listed = await templates(client)
    assert listed[0]["created_at"] == tpl["created_at"]

    s = await api.session(tpl["id"])
    assert TS_RE.match(s["created_at"])
    again = await (await client.get(f"/api/v1/sessions/{s['id']}")).json()
    assert again["created_at"] == s["created_at"]

    status, ex = await api.repl(s["id"], "1")
    assert TS_RE.match(ex["started_at"]) and TS_RE.match(ex["ended_at"])
    assert all(TS_RE.match(e["ts"]) for e in ex["events"])
    stored = await (await client.get(f"/api/v1/executions/{ex['id']}")).json()
    assert (stored["started_at"], stored["ended_at"]) == (ex["started_at"], ex["ended_at"])
    events = await (await client.get(f"/api/v1/executions/{ex['id']}/events")).json()
    assert [e["ts"] for e in events] == [e["ts"] for e in ex["events"]]

    closed = await (await client.post(f"/api/v1/sessions/{s['id']}/close")).json()
    assert TS_RE.match(closed["closed_at"])
    again = await (await client.get(f"/api/v1/sessions/{s['id']}")).json()
    assert again["closed_at"] == closed["closed_at"]


# ---------------------------------------------------------------- OpenAPI

CONTRACT_ROUTES = [
    ("get", "/api/v1/health"),
    ("get", "/api/v1/runtime/summary"),
    ("get", "/api/v1/modules"),
    ("get", "/api/v1/libraries"),
    ("get", "/api/v1/templates"),
    ("post", "/api/v1/templates"),
    ("get", "/api/v1/templates/{template_id}"),
    ("patch", "/api/v1/templates/{template_id}"),
    ("delete", "/api/v1/templates/{template_id}"),
    ("get", "/api/v1/templates/{template_id}/capabilities"),
    ("post", "/api/v1/templates/{template_id}/capabilities"),
    ("delete", "/api/v1/templates/{template_id}/capabilities/{capability_id}"),
    ("get", "/api/v1/templates/{template_id}/startup-files"),
    ("post", "/api/v1/templates/{template_id}/startup-files"),
    ("delete", "/api/v1/templates/{template_id}/startup-files/{startup_file_id}"),
    ("get", "/api/v1/templates/{template_id}/modules"),
    ("post", "/api/v1/templates/{template_id}/modules"),
    ("delete", "/api/v1/templates/{template_id}/modules/{name}"),
    ("get", "/api/v1/templates/{template_id}/libraries"),
    ("post", "/api/v1/templates/{template_id}/libraries"),
    ("delete", "/api/v1/templates/{template_id}/libraries/{name}"),
    ("get", "/api/v1/sessions"),
    ("post", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{session_id}"),
    ("post", "/api/v1/sessions/{session_id}/close"),
    ("delete", "/api/v1/sessions/{session_id}"),
    ("get", "/api/v1/executions"),
    ("post", "/api/v1/executions/repl"),
    ("post", "/api/v1/executions/run-file"),
    ("get", "/api/v1/executions/{execution_id}"),
    ("get", "/api/v1/executions/{execution_id}/events"),
    ("post", "/api/v1/executions/{execution_id}/cancel"),
    ("get", "/api/v1/openapi.json"),
]


async def test_openapi_document_lists_every_route(client):
    r = await client.get("/api/v1/openapi.json")
    assert r.status == 200
    doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]
    for method, path in CONTRACT_ROUTES:
        assert method in doc["paths"].get(path, {}), (method, path)
    create = doc["paths"]["/api/v1/templates"]["post"]
    assert "201" in create["responses"]
    assert "requestBody" in create
    assert "400" in create["responses"] and "409" in create["responses"]
    repl = doc["paths"]["/api/v1/executions/repl"]["post"]
    assert {"201", "202", "409"} <= set(repl["responses"])
    # Every $ref resolves.
    schemas = doc["components"]["schemas"]
    for ref in re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', await r.text()):
        assert ref in schemas, ref


async def test_request_id_appears_in_the_log_line(client, caplog):
    caplog.set_level("INFO", logger="vm_system")
    r = await client.get(f"/api/v1/templates/{MISSING}")
    rid = r.headers["X-Request-Id"]
    lines = [rec.getMessage() for rec in caplog.records if rid in rec.getMessage()]
    assert lines and f"/api/v1/templates/{MISSING}" in lines[0] and "404" in lines[0]


class UnreachableStore(Store):
    """A real store whose database stops answering after start-up."""

    async def ping(self) -> bool:
        return False


async def test_health_is_503_when_the_store_is_unreachable(aiohttp_client, settings):
    client = await aiohttp_client(create_app(settings, store=UnreachableStore(settings.db_url)))
    r = await client.get("/api/v1/health")
    assert r.status == 503
    assert await r.json() == {"status": "unavailable"}


async def test_token_is_required_when_configured(aiohttp_client, settings):
    client = await aiohttp_client(create_app(dataclasses.replace(settings, token="s3cret")))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        r = await client.get("/api/v1/templates", headers=headers)
        await expect_error(r, 401, "UNAUTHORIZED")
        assert uuid.UUID(r.headers["X-Request-Id"])
    r = await client.post("/api/v1/templates", json={"name": "x"})
    await expect_error(r, 401, "UNAUTHORIZED")
    r = await client.get("/api/v1/templates", headers={"Authorization": "Bearer s3cret"})
    assert r.status == 200 and await r.json() == []
    assert (await client.get("/api/v1/health")).status == 200
