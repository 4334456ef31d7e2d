"""The list pages and forms: session lifecycle in the list, stale messages, history search and pages."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui_support import Ui, expect

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_failed_create_leaves_no_crashed_row_in_the_default_list(page: Any, ui: Ui) -> None:
    libraries = await ui.call("GET", "/libraries")
    name = next(lib["name"] for lib in libraries if not lib["cached"])
    tpl = await ui.call("POST", "/templates", {"name": "needs-a-library"})
    await ui.call("POST", f"/templates/{tpl['id']}/libraries", {"name": name})
    ready = await ui.session()

    await page.goto(ui.url("/sessions"))
    await page.locator(f"tr[data-session-id='{ready}']").wait_for()
    await page.locator("#session-template").select_option(label="needs-a-library")
    await page.get_by_label("Worktree path").fill(str(ui.worktree))
    for _ in range(2):  # two failed clicks, as in the review
        await page.get_by_role("button", name="Create session").click()
        await expect(page.locator("#create-session + .form-status")).to_contain_text("LIBRARY_UNAVAILABLE")
    crashed = [s for s in await ui.call("GET", "/sessions") if s["status"] == "crashed"]
    assert len(crashed) == 2
    rows = page.locator("#sessions-body tr[data-session-id]")
    await expect(page.locator("#sessions-hidden")).to_contain_text(
        "2 crashed or closed sessions are not listed"
    )
    await expect(rows).to_have_count(1)  # only the ready one
    await page.get_by_role("button", name="Show all sessions").click()
    await expect(rows).to_have_count(3)
    assert await page.locator("#status-filter").input_value() == "any"
    await page.locator("#status-filter").select_option("crashed")
    await expect(rows).to_have_count(2)


async def test_a_message_is_cleared_by_the_next_action(page: Any, ui: Ui) -> None:
    tpl = await ui.call("POST", "/templates", {"name": "messages"})
    await page.goto(ui.url(f"/templates/{tpl['id']}"))
    await page.locator("#template-title", has_text="messages").wait_for()
    await page.get_by_label("Wall time (ms)").fill("3000")
    await page.get_by_role("button", name="Save limits").click()
    saved = page.locator("#limits-form + .form-status")
    await expect(saved).to_have_text("Limits saved.")
    # An unrelated action elsewhere on the page fails: the old "saved" note goes away.
    await page.locator("#cap-name").fill("HOME")
    await page.locator("#cap-kind").select_option("env")
    await page.locator("#cap-config").fill("{nope")
    await page.get_by_role("button", name="Add capability").click()
    await expect(page.locator("#cap-form + .form-status").get_by_role("alert")).to_contain_text(
        "INVALID_CONFIG"
    )
    await expect(saved).to_be_empty()


async def test_the_history_page_searches_filters_and_pages(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    for i in range(124):
        await ui.call("POST", "/executions/repl", {"session_id": sid, "input": f"'item {i}'"})
    for i in range(3):
        await ui.call("POST", "/executions/repl", {"session_id": sid, "input": f"throw new Error('bad {i}')"})

    await page.goto(ui.url(f"/sessions/{sid}/history"))
    rows = page.locator("#history-body tr[data-execution-id]")
    await expect(rows).to_have_count(100)
    await expect(page.locator("#history-range")).to_have_text("Showing 1–100 of 127.")
    await expect(rows.first).to_contain_text("bad 2")  # newest first
    await page.get_by_role("button", name="Older →").click()
    await expect(rows).to_have_count(27)
    await expect(rows.last).to_contain_text("'item 0'")
    await expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    await page.get_by_role("button", name="← Newer").click()
    await expect(rows).to_have_count(100)

    await page.get_by_label("Status").select_option("error")
    await expect(rows).to_have_count(3)
    await expect(page.locator("#history-range")).to_have_text("Showing 1–3 of 3 (3 of 127 match).")
    await page.get_by_label("Status").select_option("")
    await page.get_by_label("Search inputs and files").fill("item 12")
    await expect(rows).to_have_count(5)  # item 12, 120..123
    await page.get_by_label("Search inputs and files").fill("no such input")
    await expect(page.locator("#history-body")).to_contain_text("No execution matches these filters.")
