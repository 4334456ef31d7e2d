"""The browser REPL with the server's conveniences (API.md §11, §12): completion, background
timers, queued input, console.clear, console.table, object arguments, Map/Set entries, fork."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.ui_support import Ui, console_lines, editor_text, expect, open_repl, replace_input, run, shot

pytestmark = pytest.mark.asyncio(loop_scope="module")

POPUP = ".cm-tooltip-autocomplete"


async def value_of(ui: Ui, sid: str, code: str) -> Any:
    body = await ui.call("POST", "/executions/repl", {"session_id": sid, "input": code})
    assert body["status"] == "ok", body
    return body["result"]["json"]


async def test_tab_completes_a_name_and_offers_a_list_when_there_are_several(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await value_of(ui, sid, "var alphaLongName = 1; var user = { profile: { name: 'a', nation: 'b' } }")
    await open_repl(page, ui, sid)
    await page.locator("#repl-input").focus()

    # One candidate: Tab inserts it, as the Node REPL does.
    await page.keyboard.type("alph")
    await page.keyboard.press("Tab")
    await expect(page.locator("#repl-input")).to_have_text("alphaLongName")
    assert await page.locator(POPUP).count() == 0

    # Several: a list to choose from; ↓ then Tab takes the second.
    await replace_input(page, "")
    await page.keyboard.type("user.profile.na")
    await page.keyboard.press("Tab")
    popup = page.locator(POPUP)
    await expect(popup.locator("li")).to_have_count(2)
    assert [t.strip() for t in await popup.locator("li .cm-completionLabel").all_inner_texts()] == [
        "name",
        "nation",
    ]
    await shot(page, "completion")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Tab")
    await expect(popup).to_have_count(0)
    assert await editor_text(page) == "user.profile.nation"
    await page.keyboard.press("Enter")  # the popup is closed: Enter runs
    block = page.locator(".exec").last
    await expect(block.locator(".line.value .vt-preview")).to_have_text("'b'")

    # Esc closes the list without cancelling anything or leaving the editor.
    await page.keyboard.type("Math.m")
    await page.keyboard.press("Tab")
    await expect(popup).to_be_visible()
    assert "max" in await popup.inner_text()
    await page.keyboard.press("Escape")
    await expect(popup).to_have_count(0)
    assert await editor_text(page) == "Math.m"
    assert await page.evaluate("() => document.activeElement.id") == "repl-input"


async def test_background_ticks_show_live_while_another_input_runs(page: Any, ui: Ui) -> None:
    sid = await ui.session(wall_ms=120_000)
    await open_repl(page, ui, sid)
    started = await run(
        page, "var n = 0; var h = setInterval(() => console.log('tick', ++n), 100); 'started'"
    )
    # The value comes at once (the timer does not hold the input open)…
    await expect(started.locator(".exec-head .badge")).to_have_text("ok")
    await expect(started.locator(".line.value .vt-preview")).to_have_text("'started'")
    # …and the ticks stream into the session's background block.
    background = page.locator(".exec[data-kind=background]")
    await expect(background.locator(".exec-head .badge")).to_have_text("running")
    await expect(background.locator(".exec-input")).to_contain_text("timers left running")
    await expect(background.locator(".line.console").nth(1)).to_have_text("tick 2")

    # Another input runs: the ticks go on arriving while it does, below it.
    slow = await run(page, "await new Promise(r => setTimeout(r, 100000)); 'slow'", wait=False)
    await expect(slow.locator(".exec-head .badge")).to_have_text("running")
    seen = len(await console_lines(background))
    await expect(background.locator(".line.console").nth(seen + 2)).to_have_text(f"tick {seen + 3}")
    await expect(slow.locator(".exec-head .badge")).to_have_text("running")
    assert await page.locator("#repl-log > .exec").last.get_attribute("data-kind") == "background"
    await shot(page, "background")

    # Esc cancels the input, not the timers.
    await page.keyboard.press("Escape")
    await expect(slow.locator(".exec-head .badge")).to_have_text("cancelled")
    seen = len(await console_lines(background))
    await expect(background.locator(".line.console").nth(seen)).to_be_attached()
    await expect(background.locator(".exec-head .badge")).to_have_text("running")

    # "Stop timers" ends the background execution; every tick it ran is on the page.
    await background.get_by_role("button", name="Stop timers").click()
    await expect(background.locator(".exec-head .badge")).to_have_text("cancelled")
    assert await page.evaluate("() => document.activeElement.id") == "repl-input"
    ticks = await value_of(ui, sid, "n")
    lines = await console_lines(background)
    assert lines == [f"tick {i}" for i in range(1, ticks + 1)]

    # A new background execution starts with the next timers, again at the bottom.
    await run(page, "setTimeout(() => console.log('later'), 50); 'armed'")
    newest = page.locator(".exec[data-kind=background]").last
    await expect(newest.locator(".line.console")).to_have_text(["later"])
    await expect(newest.locator(".exec-head .badge")).to_have_text("ok")


async def test_input_typed_while_busy_is_queued_then_runs(page: Any, ui: Ui) -> None:
    sid = await ui.session(wall_ms=120_000)
    await open_repl(page, ui, sid)
    busy = await run(page, "await new Promise(r => setTimeout(r, 100000)); 'first'", wait=False)
    await expect(busy.locator(".exec-head .badge")).to_have_text("running")
    await page.locator("#repl-input").fill("'second'")
    await page.locator("#repl-input").press("Enter")
    queued = page.locator(".exec.queued")
    await expect(queued.locator(".badge")).to_have_text("queued")
    await expect(queued.locator(".exec-input")).to_have_text("'second'")
    assert await editor_text(page) == ""  # taken, not refused
    assert await page.locator(".repl-error").count() == 0
    await shot(page, "queued")

    await busy.get_by_role("button", name="Cancel").click()
    await expect(busy.locator(".exec-head .badge")).to_have_text("cancelled")
    await expect(queued).to_have_count(0)
    second = page.locator(".exec").nth(1)
    await expect(second.locator(".line.value .vt-preview")).to_have_text("'second'")
    await expect(page.locator(".exec")).to_have_count(2)  # the queued entry became its block


async def test_console_clear_table_and_object_arguments(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    await run(page, "'before'")
    block = await run(
        page,
        "console.log('gone'); console.clear(); console.table([{x: 1, y: 'z'}, {x: 2}]);"
        " console.log('user', {id: 7, tags: ['a']}); 'after'",
    )

    async def check() -> None:
        # The value is the last event: everything else is on the page once it is.
        await expect(page.locator(".exec .line.value .vt-preview")).to_have_text("'after'")
        await expect(page.locator("#repl-log > .exec")).to_have_count(1)  # 'before' is hidden
        await expect(page.locator(".repl-cleared")).to_contain_text("console.clear()")
        out = page.locator(".exec .exec-out")
        await expect(out).not_to_contain_text("gone")
        await expect(out.locator(".line.cleared")).to_have_text("Console was cleared")
        table = out.locator("table.console-table")
        assert await table.locator("thead th").all_inner_texts() == ["(index)", "x", "y"]
        rows = table.locator("tbody tr")
        await expect(rows).to_have_count(2)
        assert [await rows.nth(i).locator("th, td").all_inner_texts() for i in range(2)] == [
            ["0", "1", "'z'"],
            ["1", "2", ""],
        ]
        line = out.locator(".line.has-args")
        assert " ".join((await line.inner_text()).split()) == "user { id: 7, tags: [ 'a' ] }"
        await line.locator(".vt-root > summary").click()
        await expect(line.locator(".vt-leaf", has_text="id: 7")).to_be_visible()
        await expect(line.locator(".vt-key", has_text="tags")).to_be_visible()

    await check()
    await shot(page, "console-table")
    await page.reload()  # the clear is part of the session's history: the same view again
    await page.locator("#conn-state[data-state=live]").wait_for()
    await check()
    eid = await page.locator(".exec").first.get_attribute("data-execution-id")
    assert eid == await block.get_attribute("data-execution-id")
    # The execution page draws the table as a table too.
    await page.goto(ui.url(f"/executions/{eid}"))
    await expect(page.locator("#events-body table.console-table tbody tr")).to_have_count(2)
    await expect(page.locator("#events-body")).to_contain_text("console.clear()")


async def test_map_and_set_results_open_and_minus_zero_is_shown(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    block = await run(page, "new Map([['k', {a: 1}], [{id: 2}, 'v']])")
    await expect(block.locator(".vt-preview").first).to_have_text(
        "Map(2) { 'k' => { a: 1 }, { id: 2 } => 'v' }"
    )
    await block.locator(".vt-root > summary").click()
    entries = block.locator(".vt-root > .vt-children > li > .vt-entry")
    await expect(entries).to_have_count(2)
    await expect(entries.last).to_contain_text("'v'")
    texts = [" ".join(t.split()) for t in await entries.all_inner_texts()]
    assert texts == ["'k' => { a: 1 }", "{ id: 2 } => 'v'"]
    await entries.first.locator("summary").click()  # the value of 'k' opens in turn
    await expect(entries.first.locator(".vt-leaf", has_text="a: 1")).to_be_visible()
    await shot(page, "map-entries")

    block = await run(page, "new Set([1, 'a'])")
    await block.locator(".vt-root > summary").click()
    items = block.locator(".vt-root > .vt-children > li > .vt-entry")
    await expect(items).to_have_text(["1", "'a'"])

    # The server sends the first 100 entries; the rest are counted, not lost silently.
    block = await run(page, "new Map(Array.from({length: 150}, (_, i) => [i, i * i]))")
    await block.locator(".vt-root > summary").click()
    await expect(block.locator(".vt-root > .vt-children > li > .vt-entry")).to_have_count(100)
    await expect(block.locator(".vt-children")).to_contain_text("… 50 more entries (not sent)")

    block = await run(page, "-0")
    await expect(block.locator(".line.value .vt-preview")).to_have_text("-0")


async def test_fork_opens_a_new_session_holding_the_parents_state(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    await run(page, "var keep = 41; function twice(x) { return 2 * x }")
    await page.get_by_role("button", name="Fork").click()
    await page.wait_for_url(
        lambda url: sid not in url and re.search(r"/sessions/[0-9a-f-]{36}$", url) is not None
    )
    fork = page.url.rsplit("/", 1)[1]
    await page.locator("#conn-state[data-state=live]").wait_for()
    await expect(page.locator("#session-status")).to_have_text("ready")
    forked_from = page.locator("#session-forked-from")
    await expect(forked_from.get_by_role("link", name=f"Session {sid[:8]}")).to_have_attribute(
        "href", f"/sessions/{sid}"
    )
    assert await page.locator(".exec").count() == 0  # a fork starts with an empty history
    block = await run(page, "twice(keep) - keep + 1")
    await expect(block.locator(".line.value .vt-preview")).to_have_text("42")
    await run(page, "keep = 0")
    assert await value_of(ui, sid, "keep") == 41  # the parent does not see the fork's change
    assert (await ui.call("GET", f"/sessions/{fork}"))["runtime_meta"]["forked_from"]["session_id"] == sid


async def test_a_cancelled_runaway_loop_keeps_the_sessions_state(page: Any, ui: Ui) -> None:
    # Review item 2, as a user meets it: Esc on `while (true) {}` keeps what came before.
    sid = await ui.session(wall_ms=60_000, cpu_ms=60_000)
    await open_repl(page, ui, sid)
    await run(page, "var keep = 1")
    spin = await run(page, "while (true) {}", wait=False)
    await expect(spin.locator(".exec-head .badge")).to_have_text("running")
    await page.keyboard.press("Escape")
    await expect(spin.locator(".exec-head .badge")).to_have_text("cancelled")
    await expect(spin.locator(".line.system")).to_contain_text("rolled back to before this execution")
    block = await run(page, "keep")
    await expect(block.locator(".line.value .vt-preview")).to_have_text("1")
