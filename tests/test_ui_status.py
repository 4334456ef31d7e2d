"""UI pages answer with the right HTTP status: 404 for what does not exist, 200 for what does."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import Api


async def _page(client: Any, path: str) -> tuple[int, str, str]:
    r = await client.get(path, allow_redirects=False)
    return r.status, r.content_type, await r.text()


async def test_unknown_ids_and_addresses_are_404_pages(client: Any) -> None:
    unknown = str(uuid.uuid4())
    for path, heading in (
        (f"/sessions/{unknown}", "Session not found"),
        (f"/sessions/{unknown}/history", "Session not found"),
        (f"/templates/{unknown}", "Template not found"),
        (f"/executions/{unknown}", "Execution not found"),
        (f"/templates/{unknown.upper()}", "Template not found"),
        ("/sessions/not-an-id", "Session not found"),
        ("/nothing-here", "Page not found"),
    ):
        status, ctype, body = await _page(client, path)
        assert (status, ctype) == (404, "text/html"), path
        assert f">{heading}</h1>" in body, path
        assert "<form" not in body and "/static/js/pages/" not in body, path  # no live page behind it
    status, ctype, _ = await _page(client, "/static/js/nothing.js")
    assert status == 404


async def test_pages_of_existing_things_are_200(client: Any, api: Api) -> None:
    tpl = await api.template()
    session = await api.session(tpl["id"])
    _status, execution = await api.repl(session["id"], "1 + 1")
    for path in (
        "/sessions",
        "/templates",
        f"/templates/{tpl['id']}",
        f"/templates/{tpl['id'].upper()}",  # ids are accepted in any case, as in the API
        f"/sessions/{session['id']}",
        f"/sessions/{session['id']}/history",
        f"/executions/{execution['id']}",
    ):
        status, ctype, body = await _page(client, path)
        assert (status, ctype) == (200, "text/html"), path
        assert "not found</h1>" not in body, path
    # A closed session still has its page (its history stays readable).
    await client.post(f"/api/v1/sessions/{session['id']}/close")
    assert (await _page(client, f"/sessions/{session['id']}"))[0] == 200
