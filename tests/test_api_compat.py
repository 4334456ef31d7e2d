"""API.md section 15: what the original's clients rely on (engine alias, max_events, library errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.config import Settings
from server.runtime import libraries
from tests.conftest import Api, expect_error, get_json, session_body, stored_events

# -- goja is an alias of quickjs -----------------------------------------------------------------


@pytest.mark.parametrize("engine", ["goja", " GOJA ", "quickjs"])
async def test_goja_is_stored_as_quickjs(client: Any, engine: str) -> None:
    r = await client.post("/api/v1/templates", json={"name": f"t-{engine.strip()}", "engine": engine})
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["engine"] == "quickjs"
    detail = await get_json(client, f"/api/v1/templates/{created['id']}")
    assert detail["template"]["engine"] == "quickjs"


async def test_an_unknown_engine_names_the_alias(client: Any) -> None:
    r = await client.post("/api/v1/templates", json={"name": "n", "engine": "node"})
    err = await expect_error(r, 422, "ENGINE_UNSUPPORTED")
    assert "node" in err["message"] and "goja is an alias of quickjs" in err["message"]


# -- max_events counts every stored event ---------------------------------------------------------


async def _limited(api: Api, kind: str, code: str, max_events: int) -> tuple[int, dict[str, Any]]:
    s = await api.session(max_events=max_events)
    if kind == "repl":
        return await api.repl(s["id"], code)
    (api.worktree / "f.js").write_text(code)
    r = await api.client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": "f.js"})
    return r.status, await r.json()


async def test_max_events_1_leaves_no_room_for_a_repl_value(api: Api) -> None:
    status, body = await _limited(api, "repl", "1 + 1", 1)
    assert status == 422 and body["error"]["code"] == "OUTPUT_LIMIT_EXCEEDED"
    exec_id = body["error"]["details"]["execution_id"]
    ex = await get_json(api.client, f"/api/v1/executions/{exec_id}")
    assert ex["status"] == "error" and ex["error"]["code"] == "OUTPUT_LIMIT_EXCEEDED"
    assert ex["result"] is None and ex["metrics"]["event_count"] == 1
    # Nothing past the limit: the input echo alone fills it (so not even the closing event).
    assert [e["type"] for e in await stored_events(api.client, exec_id)] == ["input_echo"]


@pytest.mark.parametrize("code", ["1 + 1", "throw new Error('boom')"])
async def test_the_terminal_event_may_take_the_last_slot(api: Api, code: str) -> None:
    status, body = await _limited(api, "repl", code, 2)
    assert status == 201, body
    assert [e["type"] for e in body["events"]] == ["input_echo", "value" if "+" in code else "exception"]
    assert body["metrics"]["event_count"] == 2


async def test_console_output_leaves_the_last_slot_to_the_closing_event(api: Api) -> None:
    status, body = await _limited(api, "repl", "console.log('a'); 1", 2)
    assert status == 422
    events = await stored_events(api.client, body["error"]["details"]["execution_id"])
    assert [e["type"] for e in events] == ["input_echo", "system"]
    assert events[-1]["payload"]["code"] == "OUTPUT_LIMIT_EXCEEDED"

    status, body = await _limited(api, "repl", "console.log('a'); 1", 3)
    assert status == 201 and [e["type"] for e in body["events"]] == ["input_echo", "console", "value"]


async def test_a_run_file_has_no_echo_to_count(api: Api) -> None:
    status, body = await _limited(api, "run_file", "6 * 7", 1)
    assert status == 201 and [e["type"] for e in body["events"]] == ["value"]
    status, body = await _limited(api, "run_file", "console.log('x'); 6 * 7", 1)
    assert status == 422
    events = await stored_events(api.client, body["error"]["details"]["execution_id"])
    assert [(e["type"], e["payload"].get("code")) for e in events] == [("system", "OUTPUT_LIMIT_EXCEEDED")]


# -- LIBRARY_UNAVAILABLE in the original's words --------------------------------------------------


async def _library_session(api: Api, name: str = "lodash-4.17.21") -> tuple[dict[str, Any], dict[str, Any]]:
    tpl = await api.template()
    r = await api.client.post(f"/api/v1/templates/{tpl['id']}/libraries", json={"name": name})
    assert r.status == 201
    r = await api.client.post("/api/v1/sessions", json=session_body(tpl["id"], api.worktree))
    err = await expect_error(r, 422, "LIBRARY_UNAVAILABLE")
    session = await get_json(api.client, f"/api/v1/sessions/{err['details']['session_id']}")
    return err, session


async def test_an_uncached_library_fails_to_load_libraries(api: Api) -> None:
    err, session = await _library_session(api)
    prefix = "failed to load libraries: library 'lodash-4.17.21' is not in the local cache"
    assert err["message"].startswith(prefix)
    assert session["status"] == "crashed" and session["last_error"] == err["message"]


async def test_a_library_file_that_is_not_text_fails_to_load_libraries(api: Api, settings: Settings) -> None:
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    (settings.cache_dir / "lodash-4.17.21.js").write_bytes(b"var _ = '\xff\xfe';")
    err, session = await _library_session(api)
    assert err["message"].startswith("failed to load libraries: lodash-4.17.21: ")
    assert "utf-8" in err["message"]
    assert session["status"] == "crashed" and session["last_error"] == err["message"]


async def test_a_library_gone_after_the_cache_check_fails_to_load_libraries(
    api: Api, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    # The fault: the file disappears between the cache check and the worker reading it.
    monkeypatch.setattr(libraries, "is_cached", lambda _dir, _name: True)
    assert not (Path(settings.cache_dir) / "lodash-4.17.21.js").exists()
    err, session = await _library_session(api)
    assert err["message"].startswith("failed to load libraries: lodash-4.17.21: ")
    assert "No such file" in err["message"]
    assert session["last_error"] == err["message"]
