"""Template routes (API.md sections 3-4): templates, settings, capabilities, startup files,
modules and libraries."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import MISSING, TS_RE, expect_error, get_json

DEFAULT_SETTINGS = {
    "limits": {"cpu_ms": 2000, "wall_ms": 5000, "mem_mb": 128, "max_events": 50000, "max_output_kb": 256},
    "resolver": {"roots": ["."], "extensions": [".js", ".mjs"], "allow_absolute_repo_imports": False},
    "runtime": {"esm": False, "strict": False, "console": True},
}


def url(tpl: dict[str, Any], sub: str = "") -> str:
    return f"/api/v1/templates/{tpl['id']}{sub}"


# ---------------------------------------------------------------- templates


async def test_create_template_shape_and_defaults(client):
    r = await client.post("/api/v1/templates", json={"name": "  demo  "})
    assert r.status == 201
    tpl = await r.json()
    assert set(tpl) == {
        "id",
        "name",
        "engine",
        "is_active",
        "exposed_modules",
        "libraries",
        "created_at",
        "updated_at",
    }
    assert str(uuid.UUID(tpl["id"])) == tpl["id"]
    assert tpl["name"] == "demo"
    assert tpl["engine"] == "quickjs"
    assert tpl["is_active"] is True
    assert tpl["exposed_modules"] == [] and tpl["libraries"] == []
    assert TS_RE.match(tpl["created_at"]) and tpl["updated_at"] == tpl["created_at"]

    r = await client.post("/api/v1/templates", json={"name": "explicit", "engine": "quickjs"})
    assert (await r.json())["engine"] == "quickjs"


async def test_get_template_detail_with_default_settings(client, api):
    tpl = await api.template()
    detail = await get_json(client, url(tpl))
    assert set(detail) == {"template", "settings", "capabilities", "startup_files"}
    assert detail["template"] == tpl
    assert detail["settings"] == {"vm_id": tpl["id"], **DEFAULT_SETTINGS}
    assert detail["capabilities"] == []
    assert detail["startup_files"] == []


async def test_unsupported_engine_is_422_and_creates_nothing(client):
    r = await client.post("/api/v1/templates", json={"name": "g", "engine": "v8"})
    err = await expect_error(r, 422, "ENGINE_UNSUPPORTED")
    assert "v8" in err["message"]
    assert await get_json(client, "/api/v1/templates") == []


async def test_blank_name_is_validation_error(client):
    for body in ({"name": "   "}, {"name": ""}, {}):
        r = await client.post("/api/v1/templates", json=body)
        await expect_error(r, 400, "VALIDATION_ERROR")
    assert await get_json(client, "/api/v1/templates") == []


async def test_duplicate_template_name_is_conflict(client, api):
    await api.template("same")
    r = await client.post("/api/v1/templates", json={"name": "same"})
    err = await expect_error(r, 409, "CONFLICT")
    assert "same" in err["message"]
    assert [t["name"] for t in await get_json(client, "/api/v1/templates")] == ["same"]


async def test_list_templates_is_empty_array_then_newest_first(client, api):
    r = await client.get("/api/v1/templates")
    assert await r.read() == b"[]"
    names = [(await api.template(f"t{i}"))["name"] for i in range(4)]
    listed = await get_json(client, "/api/v1/templates")
    assert [t["name"] for t in listed] == names[::-1]


async def test_unknown_template_is_404_on_every_template_route(client):
    base = f"/api/v1/templates/{MISSING}"
    cases = [
        ("GET", base, None),
        ("PATCH", base, {"name": "x"}),
        ("DELETE", base, None),
        ("GET", f"{base}/capabilities", None),
        ("POST", f"{base}/capabilities", {"kind": "module", "name": "fs"}),
        ("DELETE", f"{base}/capabilities/{MISSING}", None),
        ("GET", f"{base}/startup-files", None),
        ("POST", f"{base}/startup-files", {"path": "a.js"}),
        ("DELETE", f"{base}/startup-files/{MISSING}", None),
        ("GET", f"{base}/modules", None),
        ("POST", f"{base}/modules", {"name": "fs"}),
        ("DELETE", f"{base}/modules/fs", None),
        ("GET", f"{base}/libraries", None),
        ("POST", f"{base}/libraries", {"name": "lodash-4.17.21"}),
        ("DELETE", f"{base}/libraries/lodash-4.17.21", None),
    ]
    for method, path, body in cases:
        r = await client.request(method, path, json=body)
        assert r.status == 404, (method, path)
        err = await expect_error(r, 404, "TEMPLATE_NOT_FOUND")
        assert err["details"]["template_id"] == MISSING


# ---------------------------------------------------------------- PATCH


async def test_patch_renames_and_merges_settings_key_by_key(client, api):
    tpl = await api.template("before")
    r = await client.patch(url(tpl), json={"settings": {"limits": {"cpu_ms": 100}}})
    assert r.status == 200
    r = await client.patch(
        url(tpl),
        json={
            "name": "after",
            "settings": {
                "limits": {"wall_ms": 900},
                "runtime": {"strict": True},
                "resolver": {"roots": ["src"]},
            },
        },
    )
    assert r.status == 200
    detail = await r.json()
    assert set(detail) == {"template", "settings", "capabilities", "startup_files"}
    assert detail["template"]["name"] == "after"
    assert detail["template"]["created_at"] == tpl["created_at"]
    assert TS_RE.match(detail["template"]["updated_at"])
    assert detail["template"]["updated_at"] >= tpl["updated_at"]
    expected = {
        "vm_id": tpl["id"],
        "limits": {**DEFAULT_SETTINGS["limits"], "cpu_ms": 100, "wall_ms": 900},
        "resolver": {**DEFAULT_SETTINGS["resolver"], "roots": ["src"]},
        "runtime": {**DEFAULT_SETTINGS["runtime"], "strict": True},
    }
    assert detail["settings"] == expected
    assert (await get_json(client, url(tpl)))["settings"] == expected


async def test_patch_with_nothing_to_change_keeps_everything(client, api):
    tpl = await api.template("keep")
    for body in ({}, {"settings": {}}, {"settings": {"limits": {}}}, {"name": None}):
        r = await client.patch(url(tpl), json=body)
        assert r.status == 200, body
        detail = await r.json()
        assert detail["template"]["name"] == "keep"
        assert detail["settings"] == {"vm_id": tpl["id"], **DEFAULT_SETTINGS}


async def test_patch_rejects_unknown_keys_and_wrong_types_and_changes_nothing(client, api):
    tpl = await api.template("strict")
    invalid_request = [
        {"settings": {"limits": {"cpu": 1}}},
        {"settings": {"limits": {"cpu_ms": "10"}}},
        {"settings": {"limits": {"cpu_ms": 1.5}}},
        {"settings": {"limits": {"cpu_ms": True}}},
        {"settings": {"runtime": {"strict": "yes"}}},
        {"settings": {"resolver": {"roots": "src"}}},
        {"settings": {"resolver": {"roots": [1]}}},
        {"settings": {"network": {}}},
        {"settings": []},
        {"settings": {"limits": [1]}},
        {"name": 5},
        {"Name": "x"},
        {"id": tpl["id"]},
    ]
    for body in invalid_request:
        r = await client.patch(url(tpl), json=body)
        assert r.status == 400, body
        await expect_error(r, 400, "INVALID_REQUEST")
    r = await client.patch(url(tpl), json={"settings": {"limits": {"cpu": 1}}})
    assert "cpu" in (await r.json())["error"]["message"]
    for body in ({"settings": {"limits": {"cpu_ms": -1}}}, {"name": ""}, {"name": "  "}):
        r = await client.patch(url(tpl), json=body)
        assert r.status == 400, body
        await expect_error(r, 400, "VALIDATION_ERROR")
    r = await client.patch(url(tpl), data=b"null")
    await expect_error(r, 400, "VALIDATION_ERROR")
    detail = await get_json(client, url(tpl))
    assert detail["template"]["name"] == "strict"
    assert detail["settings"] == {"vm_id": tpl["id"], **DEFAULT_SETTINGS}


async def test_patch_to_a_taken_name_is_conflict(client, api):
    await api.template("taken")
    tpl = await api.template("mine")
    r = await client.patch(url(tpl), json={"name": "taken"})
    await expect_error(r, 409, "CONFLICT")
    assert (await get_json(client, url(tpl)))["template"]["name"] == "mine"


async def test_patched_limit_applies_to_a_live_session_next_execution(client, api):
    tpl = await api.template()
    s = await api.session(tpl["id"])
    code = "for (let i = 0; i < 20; i++) console.log(i); 'done'"
    status, body = await api.repl(s["id"], code)
    assert status == 201 and body["status"] == "ok"

    r = await client.patch(url(tpl), json={"settings": {"limits": {"max_events": 5}}})
    assert r.status == 200
    status, body = await api.repl(s["id"], code)
    assert status == 422, body
    assert body["error"]["code"] == "OUTPUT_LIMIT_EXCEEDED"
    exec_id = body["error"]["details"]["execution_id"]
    execution = await get_json(client, f"/api/v1/executions/{exec_id}")
    assert execution["status"] == "error"
    assert execution["error"]["code"] == "OUTPUT_LIMIT_EXCEEDED"
    events = await get_json(client, f"/api/v1/executions/{exec_id}/events")
    assert len([e for e in events if e["type"] == "console"]) < 20
    assert events[-1]["type"] == "system"

    r = await client.patch(url(tpl), json={"settings": {"limits": {"max_events": 0}}})
    assert r.status == 200
    status, body = await api.repl(s["id"], code)
    assert status == 201 and body["status"] == "ok"


# ---------------------------------------------------------------- DELETE


async def test_delete_template_keeps_its_sessions_running(client, api):
    tpl = await api.template()
    s = await api.session(tpl["id"])
    await api.value(s["id"], "var kept = 7")
    r = await client.delete(url(tpl))
    assert r.status == 200
    assert await r.json() == {"status": "ok", "template_id": tpl["id"]}

    await expect_error(await client.get(url(tpl)), 404, "TEMPLATE_NOT_FOUND")
    await expect_error(await client.delete(url(tpl)), 404, "TEMPLATE_NOT_FOUND")
    assert await get_json(client, "/api/v1/templates") == []

    session = await get_json(client, f"/api/v1/sessions/{s['id']}")
    assert session["status"] == "ready"
    assert (await api.value(s["id"], "kept * 6"))["json"] == 42
    assert [x["id"] for x in await get_json(client, "/api/v1/sessions")] == [s["id"]]
    summary = await get_json(client, "/api/v1/runtime/summary")
    assert s["id"] in summary["active_session_ids"]


async def test_delete_template_accepts_any_id_form(client, api):
    tpl = await api.template()
    r = await client.delete(f"/api/v1/templates/{tpl['id'].upper()}")
    assert await r.json() == {"status": "ok", "template_id": tpl["id"]}


# ---------------------------------------------------------------- capabilities


async def test_capabilities_add_list_delete(client, api):
    tpl = await api.template()
    assert await get_json(client, url(tpl, "/capabilities")) == []
    r = await client.post(url(tpl, "/capabilities"), json={"kind": "module", "name": "fs"})
    assert r.status == 201
    cap = await r.json()
    assert set(cap) == {"id", "vm_id", "kind", "name", "enabled", "config"}
    assert str(uuid.UUID(cap["id"])) == cap["id"]
    assert cap["vm_id"] == tpl["id"]
    assert (cap["kind"], cap["name"], cap["enabled"], cap["config"]) == ("module", "fs", True, {})

    r = await client.post(
        url(tpl, "/capabilities"),
        json={"kind": "env", "name": "HOME", "enabled": False, "config": {"value": "/x", "n": [1]}},
    )
    assert r.status == 201
    second = await r.json()
    assert second["enabled"] is False and second["config"] == {"value": "/x", "n": [1]}

    listed = await get_json(client, url(tpl, "/capabilities"))
    assert listed == [cap, second]
    assert (await get_json(client, url(tpl)))["capabilities"] == [cap, second]

    r = await client.delete(url(tpl, f"/capabilities/{cap['id'].upper()}"))
    assert r.status == 200
    assert (await r.json())["status"] == "ok"
    assert await get_json(client, url(tpl, "/capabilities")) == [second]
    r = await client.delete(url(tpl, f"/capabilities/{cap['id']}"))
    assert r.status == 404


async def test_capability_conflicts_and_validation(client, api):
    tpl = await api.template()
    r = await client.post(url(tpl, "/capabilities"), json={"kind": "global", "name": "x"})
    assert r.status == 201
    r = await client.post(url(tpl, "/capabilities"), json={"kind": "global", "name": "x", "enabled": False})
    await expect_error(r, 409, "CONFLICT")
    r = await client.post(url(tpl, "/capabilities"), json={"kind": "net", "name": "x"})
    assert r.status == 201, "same name under another kind is a different capability"
    other = await api.template()
    r = await client.post(url(other, "/capabilities"), json={"kind": "global", "name": "x"})
    assert r.status == 201, "capabilities are per template"

    for body in (
        {"name": "x"},
        {"kind": "module"},
        {"kind": "", "name": "x"},
        {"kind": "module", "name": ""},
        {"kind": "module", "name": None},
        {"kind": "disk", "name": "y"},
    ):
        r = await client.post(url(tpl, "/capabilities"), json=body)
        assert r.status == 400, body
        await expect_error(r, 400, "VALIDATION_ERROR")
    r = await client.post(url(tpl, "/capabilities"), json={"kind": "module", "name": "y", "extra": 1})
    err = await expect_error(r, 400, "INVALID_REQUEST")
    assert "extra" in err["message"]
    assert len(await get_json(client, url(tpl, "/capabilities"))) == 2


# ---------------------------------------------------------------- startup files


async def test_startup_files_add_list_ordered_and_delete(client, api):
    tpl = await api.template()
    assert await get_json(client, url(tpl, "/startup-files")) == []
    r = await client.post(url(tpl, "/startup-files"), json={"path": "./lib//b.js"})
    assert r.status == 201
    b = await r.json()
    assert set(b) == {"id", "vm_id", "path", "order_index", "mode"}
    assert (b["vm_id"], b["path"], b["order_index"], b["mode"]) == (tpl["id"], "lib/b.js", 0, "eval")

    created = [b]
    for body in (
        {"path": "z/../c.js", "order_index": -5},
        {"path": "a.js", "order_index": 10, "mode": "eval"},
        {"path": "d.js", "mode": " EVAL "},
        {"path": "e.js", "order_index": None, "mode": None},
    ):
        r = await client.post(url(tpl, "/startup-files"), json=body)
        assert r.status == 201, await r.text()
        created.append(await r.json())
    assert [f["path"] for f in created] == ["lib/b.js", "c.js", "a.js", "d.js", "e.js"]
    assert created[3]["mode"] == "eval" and created[4]["order_index"] == 0

    listed = await get_json(client, url(tpl, "/startup-files"))
    # order_index first, then creation order
    assert [f["path"] for f in listed] == ["c.js", "lib/b.js", "d.js", "e.js", "a.js"]
    assert (await get_json(client, url(tpl)))["startup_files"] == listed

    r = await client.delete(url(tpl, f"/startup-files/{b['id']}"))
    assert r.status == 200
    assert (await r.json())["status"] == "ok"
    listed = await get_json(client, url(tpl, "/startup-files"))
    assert [f["path"] for f in listed] == ["c.js", "d.js", "e.js", "a.js"]
    await expect_error(await client.delete(url(tpl, f"/startup-files/{b['id']}")), 404, "NOT_FOUND")


async def test_startup_file_errors_leave_nothing_behind(client, api):
    tpl = await api.template()
    r = await client.post(url(tpl, "/startup-files"), json={"path": "main.js"})
    assert r.status == 201
    for path in ("main.js", "./main.js", "x/../main.js"):
        r = await client.post(url(tpl, "/startup-files"), json={"path": path, "order_index": 3})
        await expect_error(r, 409, "CONFLICT")
    for path in (
        "/etc/passwd",
        "\\\\server\\x.js",
        "../x.js",
        "a/../../x.js",
        "..",
        ".",
        "./",
        "a/..",
        "   ",
    ):
        r = await client.post(url(tpl, "/startup-files"), json={"path": path})
        assert r.status == 422, path
        err = await expect_error(r, 422, "INVALID_PATH")
        assert err["details"]["template_id"] == tpl["id"]
    for body in ({"path": ""}, {"path": None}, {"order_index": 1}):
        r = await client.post(url(tpl, "/startup-files"), json=body)
        await expect_error(r, 400, "VALIDATION_ERROR")
    for mode in ("import", "module", "esm"):
        r = await client.post(url(tpl, "/startup-files"), json={"path": "m.js", "mode": mode})
        err = await expect_error(r, 422, "STARTUP_MODE_UNSUPPORTED")
        assert err["details"]["requested_mode"] == mode
        assert err["details"]["supported_modes"] == ["eval"]
    assert [f["path"] for f in await get_json(client, url(tpl, "/startup-files"))] == ["main.js"]


# ---------------------------------------------------------------- modules


async def test_modules_add_normalise_list_and_remove(client, api):
    tpl = await api.template()
    r = await client.get(url(tpl, "/modules"))
    assert await r.read() == b"[]"
    r = await client.post(url(tpl, "/modules"), json={"name": " FS "})
    assert r.status == 201
    assert await r.json() == {"template_id": tpl["id"], "name": "fs"}
    r = await client.post(url(tpl, "/modules"), json={"name": "fs"})
    assert r.status == 201, "adding twice is a no-op, not an error"
    r = await client.post(url(tpl, "/modules"), json={"name": "database"})
    assert r.status == 201
    assert await get_json(client, url(tpl, "/modules")) == ["fs", "database"]
    assert (await get_json(client, url(tpl)))["template"]["exposed_modules"] == ["fs", "database"]

    r = await client.delete(url(tpl, "/modules/fs"))
    assert r.status == 200
    assert await r.json() == {"status": "ok", "template_id": tpl["id"], "name": "fs"}
    assert await get_json(client, url(tpl, "/modules")) == ["database"]


async def test_module_names_that_are_not_allowed(client, api):
    tpl = await api.template()
    for name in (" JSON ", "Console", "math", "DATE", "Array", "string", "object", "Promise", "   ", "nope"):
        r = await client.post(url(tpl, "/modules"), json={"name": name})
        assert r.status == 422, name
        await expect_error(r, 422, "MODULE_NOT_ALLOWED")
    for body in ({"name": ""}, {}, {"name": None}):
        r = await client.post(url(tpl, "/modules"), json=body)
        await expect_error(r, 400, "VALIDATION_ERROR")
    assert await get_json(client, url(tpl, "/modules")) == []


async def test_enabled_module_is_requirable_in_new_sessions(client, api):
    tpl = await api.template()
    s1 = await api.session(tpl["id"])
    status, body = await api.repl(s1["id"], "require('fs')")
    assert body["status"] == "error" and "Invalid module" in body["error"]["message"]
    await client.post(url(tpl, "/modules"), json={"name": "fs"})
    s2 = await api.session(tpl["id"])
    assert s2["runtime_meta"]["modules"] == ["fs"]
    assert (await api.value(s2["id"], "typeof require('fs').readFileSync"))["json"] == "function"


# ---------------------------------------------------------------- libraries


async def test_libraries_add_list_and_remove(client, api):
    tpl = await api.template()
    r = await client.get(url(tpl, "/libraries"))
    assert await r.read() == b"[]"
    r = await client.post(url(tpl, "/libraries"), json={"name": "lodash-4.17.21"})
    assert r.status == 201
    assert await r.json() == {"template_id": tpl["id"], "name": "lodash-4.17.21"}
    r = await client.post(url(tpl, "/libraries"), json={"name": "dayjs-1.11.13"})
    assert r.status == 201
    assert await get_json(client, url(tpl, "/libraries")) == ["lodash-4.17.21", "dayjs-1.11.13"]
    assert (await get_json(client, url(tpl)))["template"]["libraries"] == ["lodash-4.17.21", "dayjs-1.11.13"]
    r = await client.delete(url(tpl, "/libraries/lodash-4.17.21"))
    assert r.status == 200
    assert (await r.json())["status"] == "ok"
    assert await get_json(client, url(tpl, "/libraries")) == ["dayjs-1.11.13"]


async def test_library_not_in_catalog_is_rejected(client, api):
    tpl = await api.template()
    for name in ("lodash", "lodash-0.0.1", "left-pad-1.0.0", "   "):
        r = await client.post(url(tpl, "/libraries"), json={"name": name})
        assert r.status == 422, name
        await expect_error(r, 422, "LIBRARY_NOT_ALLOWED")
    r = await client.post(url(tpl, "/libraries"), json={"name": ""})
    await expect_error(r, 400, "VALIDATION_ERROR")
    assert await get_json(client, url(tpl, "/libraries")) == []
