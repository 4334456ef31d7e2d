"""The pages around the REPL: lists, forms and their messages, not-found pages, narrow screens."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import aiohttp
import pytest

from tests.ui_support import CONTRAST, Ui, answer_dialogs, expect, open_repl, run, shot

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
    # What to do, said plainly, with the command ready to copy.
    help_ = page.locator("#create-session + .form-status .flash-help")
    await expect(help_).to_contain_text("on the machine the server runs on")
    await expect(help_.locator("code")).to_have_text(f"vm-system libs download {name}")
    await expect(help_.get_by_role("button", name="copy")).to_be_visible()
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

    # Read 50 at a time: older executions come with the REST cursor (`before`), none twice.
    await page.goto(ui.url(f"/sessions/{sid}/history?batch=50"))
    more = page.get_by_role("button", name="Load older executions")
    await expect(page.locator("#history-range")).to_have_text(
        "Showing 1–50 of 50. Older executions are not loaded yet."
    )
    await more.click()
    await expect(page.locator("#history-range")).to_have_text(
        "Showing 1–100 of 100. Older executions are not loaded yet."
    )
    await more.click()
    await expect(page.locator("#history-range")).to_have_text("Showing 1–100 of 127.")
    await expect(more).to_be_hidden()
    await page.get_by_role("button", name="Older →").click()
    await expect(rows).to_have_count(27)
    await expect(rows.last).to_contain_text("'item 0'")


async def test_form_errors_show_next_to_their_form_and_stay_in_view(page: Any, ui: Ui) -> None:
    tpl = await ui.call("POST", "/templates", {"name": "errors-here"})
    await page.set_viewport_size({"width": 1280, "height": 700})
    await page.goto(ui.url(f"/templates/{tpl['id']}"))
    await page.locator("#template-title", has_text="errors-here").wait_for()

    # An absolute startup path: the server's 422 appears under that form, even when the user
    # has scrolled elsewhere while it was on its way.
    async def slow(route: Any) -> None:
        await asyncio.sleep(0.4)
        await route.continue_()

    await page.route("**/startup-files", slow)
    await page.locator("#startup-path").fill("/etc/passwd")
    await page.get_by_role("button", name="Add startup file").click()
    await page.evaluate("window.scrollTo(0, 0)")
    alert = page.locator("#startup-form + .form-status").get_by_role("alert")
    await expect(alert).to_contain_text("INVALID_PATH")
    await expect(alert).to_contain_text("/etc/passwd")
    await expect(alert).to_be_in_viewport()
    assert await page.locator("#flash > *").count() == 0  # nothing at the top of the page
    await shot(page, "inline-error-startup")

    # Bad JSON in a capability's config: the message is under that form; fixing it replaces
    # the error with the success, and the config field is reset for the next capability.
    await page.locator("#cap-name").fill("HOME")
    await page.locator("#cap-kind").select_option("env")
    await page.locator("#cap-config").fill("{nope")
    await page.get_by_role("button", name="Add capability").click()
    cap_status = page.locator("#cap-form + .form-status")
    await expect(cap_status.get_by_role("alert")).to_contain_text("INVALID_CONFIG")
    await expect(cap_status.get_by_role("alert")).to_be_in_viewport()
    await page.locator("#cap-config").fill('{"x": 1}')
    await page.get_by_role("button", name="Add capability").click()
    await page.locator("#caps-body td", has_text="HOME").wait_for()
    await expect(cap_status).to_have_text("Capability added.")
    assert await page.locator("#cap-config").input_value() == "{}"

    # A success is replaced by the next failure (the template was deleted behind our back).
    await page.get_by_label("Wall time (ms)").fill("3000")
    await page.get_by_role("button", name="Save limits").click()
    limits_status = page.locator("#limits-form + .form-status")
    await expect(limits_status).to_have_text("Limits saved.")
    await ui.call("DELETE", f"/templates/{tpl['id']}")
    await page.get_by_role("button", name="Save limits").click()
    await expect(limits_status.get_by_role("alert")).to_contain_text("NOT_FOUND")
    await expect(limits_status).not_to_contain_text("Limits saved.")
    await expect(limits_status.get_by_role("alert")).to_be_in_viewport()

    # The REPL page's "Run a file" form: bad Args JSON is reported right there.
    (ui.worktree / "task.js").write_text("console.log('n is ' + __ARGS__.n)\n")
    sid = await ui.session()
    await open_repl(page, ui, sid)
    await page.get_by_text("Run a file from the worktree").click()
    await page.locator("#run-path").fill("task.js")
    await page.locator("#run-args").fill("{bad")
    await page.get_by_role("button", name="Run file").click()
    run_status = page.locator("#run-file-form + .form-status")
    await expect(run_status.get_by_role("alert")).to_contain_text("INVALID_ARGS")
    await expect(run_status.get_by_role("alert")).to_be_in_viewport()
    assert await page.locator("#flash > *").count() == 0
    await page.locator("#run-args").fill('{"n": 3}')
    await page.get_by_role("button", name="Run file").click()
    block = page.locator(".exec").last
    await block.locator(".line.console", has_text="n is 3").wait_for()
    assert await run_status.get_by_role("alert").count() == 0


async def test_close_session_asks_first(page: Any, ui: Ui) -> None:
    sid = await ui.session(wall_ms=30_000, cpu_ms=30_000)
    await open_repl(page, ui, sid)
    block = await run(page, "while (true) {}", wait=False)
    await block.locator(".exec-head .badge[data-status=running]").wait_for()

    dialogs = await answer_dialogs(page, accept=False)
    await page.get_by_role("button", name="Close session").click()
    questions = await dialogs.wait()
    assert len(questions) == 1
    assert "cancelled" in questions[0] and "state" in questions[0], questions[0]
    assert "running" in questions[0]
    await page.wait_for_timeout(300)
    assert await page.locator("#session-status").get_attribute("data-status") == "ready"
    assert await block.get_attribute("data-status") == "running"

    dialogs = await answer_dialogs(page, accept=True)
    await page.get_by_role("button", name="Close session").click()
    await page.locator("#session-status[data-status=closed]").wait_for()
    await block.locator(".exec-head .badge:not([data-status=running])").wait_for()
    assert len(await dialogs.wait()) == 1


async def test_bad_and_unknown_ids_show_not_found_pages(page: Any, ui: Ui) -> None:
    # Malformed ids: the page itself is a 404 saying what was not found, with a way back.
    for path, heading, back in (
        ("/sessions/nope", "Session not found", "/sessions"),
        ("/sessions/nope/history", "Session not found", "/sessions"),
        ("/templates/nope", "Template not found", "/templates"),
        ("/executions/nope", "Execution not found", "/sessions"),
    ):
        response = await page.goto(ui.url(path))
        assert response.status == 404, path
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        await expect(page.locator("main")).to_contain_text("nope")
        assert await page.locator("main form, main textarea, main input").count() == 0
        await expect(page.locator(f"main a[href='{back}']")).to_be_visible()
    await shot(page, "not-found-malformed")

    # Well-formed but unknown: the same 404 page, with no forms and no live REPL trying to
    # connect.
    unknown = str(uuid.uuid4())
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    for path, heading in (
        (f"/sessions/{unknown}", "Session not found"),
        (f"/sessions/{unknown}/history", "Session not found"),
        (f"/templates/{unknown}", "Template not found"),
        (f"/executions/{unknown}", "Execution not found"),
    ):
        response = await page.goto(ui.url(path))
        assert response.status == 404, path  # answered by the server, not found out by the script
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        await expect(page.locator("main")).to_contain_text(unknown)
        assert await page.locator("main form, main textarea, main input, #conn-state").count() == 0
        assert await page.locator("#flash > *").count() == 0
    await page.goto(ui.url(f"/sessions/{unknown}"))
    await page.get_by_role("heading", name="Session not found").wait_for()
    await page.wait_for_timeout(700)
    await shot(page, "not-found-session")
    assert sockets == []
    assert await page.locator("#conn-banner").is_hidden()

    # An unknown address gets the site's own 404 page; the API keeps its JSON 404.
    response = await page.goto(ui.url("/nothing-here"))
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    await expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    await shot(page, "not-found-page")
    await page.get_by_role("link", name=re.compile("Sessions")).last.click()
    await page.wait_for_url(re.compile(r"/sessions$"))
    async with aiohttp.ClientSession() as http, http.get(ui.url("/api/v1/nothing-here")) as r:
        assert r.status == 404
        assert r.content_type == "application/json"
        assert (await r.json())["error"]["code"] == "NOT_FOUND"


async def test_narrow_screens_stack_the_sessions_and_history_tables(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    code = "const total = [1, 2, 3]\n  .map((n) => n * 2)\n  .reduce((a, b) => a + b, 0)"
    await ui.call("POST", "/executions/repl", {"session_id": sid, "input": code})
    await page.set_viewport_size({"width": 375, "height": 740})

    await page.goto(ui.url(f"/sessions/{sid}/history"))
    cell = page.locator("#history-body td.code-cell").first
    await cell.wait_for()
    box = await cell.bounding_box()
    assert box["width"] >= 250, box  # readable: ~35 characters, not five
    assert await cell.locator("a").inner_text() == code  # its lines and indentation kept
    await shot(page, "narrow-history")

    await page.goto(ui.url("/sessions"))
    row = page.locator(f"tr[data-session-id='{sid}']")
    await row.wait_for()
    await row.scroll_into_view_if_needed()  # below the create form: scrolled down to, not sideways
    for name in ("Open", "History", re.compile("Close")):
        button = row.get_by_role("link" if name in ("Open", "History") else "button", name=name)
        await expect(button).to_be_in_viewport(ratio=1)
        b = await button.bounding_box()
        assert 0 <= b["x"] and b["x"] + b["width"] <= 375, (name, b)
    scroll = await page.evaluate(
        "() => { const w = document.querySelector('#sessions-body').closest('.table-wrap');"
        " return w.scrollWidth - w.clientWidth; }"
    )
    assert scroll <= 0
    await shot(page, "narrow-sessions")
    for path in ("/sessions", f"/sessions/{sid}/history"):
        await page.goto(ui.url(path))
        await page.wait_for_load_state("networkidle")
        overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"


async def test_enabling_an_uncached_library_warns(page: Any, ui: Ui) -> None:
    tpl = await ui.call("POST", "/templates", {"name": "with-libs"})
    libraries = await ui.call("GET", "/libraries")
    name = next(lib["name"] for lib in libraries if not lib["cached"])
    await page.goto(ui.url(f"/templates/{tpl['id']}"))
    box = page.locator(f"[id='libraries-{name}']")
    await box.check()
    status = page.locator("#libraries-list + .form-status")
    await expect(status).to_contain_text(f"{name} enabled")
    await expect(status).to_contain_text("LIBRARY_UNAVAILABLE")
    await expect(status).to_contain_text(f"vm-system libs download {name}")
    await expect(status).to_be_in_viewport()
    await shot(page, "uncached-library")
    # The caution stays on the library while it is enabled, also after a reload.
    note = page.locator(f"[id='libraries-{name}-warn']")
    await expect(note).to_be_visible()
    await page.reload()
    await expect(note).to_be_visible()
    await expect(note).to_contain_text(f"vm-system libs download {name}")
    await page.locator(f"[id='libraries-{name}']").uncheck()
    await expect(status).to_have_text(f"{name} removed.")
    await expect(note).to_be_hidden()


async def test_runtime_heading_once_and_a_readable_exception_stack(page: Any, ui: Ui) -> None:
    tpl = await ui.call("POST", "/templates", {"name": "cosmetic"})
    await page.goto(ui.url(f"/templates/{tpl['id']}"))
    await page.locator("#template-title", has_text="cosmetic").wait_for()
    assert await page.get_by_text("Runtime", exact=True).count() == 1

    sid = await ui.session()
    ex = await ui.call(
        "POST",
        "/executions/repl",
        {"session_id": sid, "input": "function boom() { throw new TypeError('it broke') }\nboom()"},
    )
    await page.goto(ui.url(f"/executions/{ex['id']}"))
    stacks = page.locator(".exc-stack")
    # In the summary (light card) and in the event log: two requests, so wait for both.
    await page.wait_for_function("() => document.querySelectorAll('.exc-stack').length >= 2")
    for i in range(await stacks.count()):
        assert "boom" in await stacks.nth(i).inner_text()
        ratio = await stacks.nth(i).evaluate(CONTRAST)
        assert ratio >= 4.5, f"stack text contrast {ratio:.2f} is too low"
    for i in range(await page.locator(".exc-message").count()):
        ratio = await page.locator(".exc-message").nth(i).evaluate(CONTRAST)
        assert ratio >= 4.5, f"message contrast {ratio:.2f} is too low"
    await shot(page, "execution-error", full_page=True)
