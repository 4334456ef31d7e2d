"""The browser REPL as a user meets it: the editor, keys, clear, floods, colours, values, errors, history."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import eventually
from tests.ui_support import (
    Ui,
    console_lines,
    editor_text,
    expect,
    new_page,
    open_repl,
    replace_input,
    run,
    shot,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

FOCUSED_ID = "() => document.activeElement && document.activeElement.id"


async def test_the_editor_highlights_closes_brackets_and_indents_with_tab(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    await page.locator("#repl-input").focus()
    await page.keyboard.type("const a = [1, 'x'")
    # Brackets and quotes close themselves; typing the closer steps over it.
    assert await editor_text(page) == "const a = [1, 'x']"
    await page.keyboard.type("]")
    assert await editor_text(page) == "const a = [1, 'x']"
    editor = page.locator("#repl-editor")
    await expect(editor.locator(".tok-keyword", has_text="const")).to_have_count(1)
    await expect(editor.locator(".tok-number", has_text="1")).to_have_count(1)
    await expect(editor.locator(".tok-string", has_text="'x'")).to_have_count(1)
    # The caret just after "]": that bracket and its partner are marked.
    await expect(editor.locator(".cm-matchingBracket")).to_have_count(2)

    await replace_input(page, "")
    await page.keyboard.type("if (x) {")
    assert await editor_text(page) == "if (x) {}"
    await page.keyboard.press("Enter")
    assert await editor_text(page) == "if (x) {\n  \n}"  # opened up and indented
    await page.keyboard.press("Tab")
    assert await editor_text(page) == "if (x) {\n    \n}"
    await page.keyboard.press("Shift+Tab")
    assert await editor_text(page) == "if (x) {\n  \n}"
    assert await page.evaluate(FOCUSED_ID) == "repl-input"  # Tab never left the editor
    await page.keyboard.type("y;")
    await page.keyboard.press("Tab")  # mid-line, not after a name: an indent at the caret
    assert await editor_text(page) == "if (x) {\n  y;  \n}"
    # Esc then Tab is the keyboard user's way out of the editor.
    await page.keyboard.press("Escape")
    await page.keyboard.press("Tab")
    assert await page.evaluate(FOCUSED_ID) == "repl-run"
    await shot(page, "editor")

    # The input shown in the log is highlighted the same way.
    await replace_input(page, "")
    block = await run(page, "const answer = 42")
    await expect(block.locator(".exec-input .tok-keyword", has_text="const")).to_have_count(1)


async def test_esc_and_ctrl_c_cancel_and_the_focus_comes_back(page: Any, ui: Ui) -> None:
    sid = await ui.session(wall_ms=60_000)
    cancels: list[str] = []

    def on_socket(ws: Any) -> None:
        def sent(payload: Any) -> None:
            message = json.loads(payload) if isinstance(payload, str) else {}
            if message.get("type") == "cancel":
                cancels.append(message["execution_id"])

        ws.on("framesent", sent)

    page.on("websocket", on_socket)
    await open_repl(page, ui, sid)
    wait = "await new Promise(r => setTimeout(r, 30000))"

    block = await run(page, wait, wait=False)
    await block.locator(".exec-head .badge[data-status=running]").wait_for()
    await page.keyboard.press("Escape")  # the focus is still in the editor after Enter
    await block.locator(".exec-head .badge[data-status=cancelled]").wait_for()
    assert await page.evaluate(FOCUSED_ID) == "repl-input"

    # Ctrl+C with nothing selected cancels; with a selection it is left to copy. (A cancel is
    # sent on the socket at the key press: counting the cancel frames tells which key sent one.)
    block = await run(page, wait, wait=False)
    await block.locator(".exec-head .badge[data-status=running]").wait_for()
    cancels.clear()
    await page.keyboard.type("abc")
    await page.keyboard.press("Control+a")
    await page.keyboard.press("Control+c")
    await page.keyboard.press("End")
    await page.keyboard.press("Control+c")
    await block.locator(".exec-head .badge[data-status=cancelled]").wait_for()
    assert cancels == [await block.get_attribute("data-execution-id")]
    assert await editor_text(page) == "abc"

    # From the log (the focus there), Esc cancels too and the focus goes back to the input.
    block = await run(page, wait, wait=False)
    await block.locator(".exec-head .badge[data-status=running]").wait_for()
    await page.locator("#repl-log").focus()
    await page.keyboard.press("Escape")
    await block.locator(".exec-head .badge[data-status=cancelled]").wait_for()
    assert await page.evaluate(FOCUSED_ID) == "repl-input"

    # The mouse: Cancel hides itself, and the keyboard stays in the input.
    block = await run(page, wait, wait=False)
    await block.get_by_role("button", name="Cancel").click()
    await block.locator(".exec-head .badge[data-status=cancelled]").wait_for()
    assert await page.evaluate(FOCUSED_ID) == "repl-input"
    await page.keyboard.type("1 + 1")
    assert await editor_text(page) == "1 + 1"


async def test_clear_and_ctrl_l_hide_the_blocks_but_not_the_history(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    await run(page, "'one'")
    await run(page, "'two'")
    visible = page.locator("#repl-log .exec")
    await expect(visible).to_have_count(2)
    await page.get_by_role("button", name="Clear").click()
    await expect(visible).to_have_count(0)
    await expect(page.locator(".repl-cleared")).to_contain_text("history")
    assert await page.evaluate(FOCUSED_ID) == "repl-input"
    await page.keyboard.press("ArrowUp")
    assert await editor_text(page) == "'two'"  # the input history is untouched

    await replace_input(page, "")
    await run(page, "'three'")
    await expect(visible).to_have_count(1)
    await page.locator("#repl-input").press("Control+l")
    await expect(visible).to_have_count(0)

    await page.reload()  # nothing was deleted
    await page.locator("#conn-state[data-state=live]").wait_for()
    await expect(visible).to_have_count(3)


async def test_a_flood_keeps_the_newest_lines_and_the_log_jumps_to_its_end(page: Any, ui: Ui) -> None:
    sid = await ui.session(wall_ms=120_000)  # room for the running execution below
    await open_repl(page, ui, sid)
    block = await run(page, "for (let i = 0; i < 12000; i++) console.log('L', i)")

    async def check(block: Any) -> None:
        lines = await console_lines(block)
        assert len(lines) == 5000
        assert lines[0] == "L 7000" and lines[-1] == "L 11999"
        note = block.locator(":scope > .line.more")
        await expect(note).to_contain_text("first 7,000 lines hidden")
        await expect(note.get_by_role("link", name="open the full log")).to_be_visible()
        # The note is at the top of the block, above the lines; the value comes last.
        assert await block.locator(":scope > .line.more + .exec-out").count() == 1
        out = await block.locator(".exec-out > *").all_inner_texts()
        assert out[-1].split()[-1] == "undefined"

    await check(block)
    await shot(page, "flood")
    await page.reload()  # an ended execution is read from its tail
    await page.locator("#conn-state[data-state=live]").wait_for()
    await check(page.locator(".exec").last)

    eid = await block.get_attribute("data-execution-id")
    await page.goto(ui.url(f"/executions/{eid}?page_size=100"))
    rows = page.locator("#events-body tr[data-seq]")
    await expect(rows).to_have_count(100)
    await page.get_by_role("button", name="Jump to the end").click()
    await expect(rows.first).to_have_attribute("data-seq", "11903")
    await expect(rows.last).to_have_attribute("data-seq", "12002")  # echo + 12,000 lines + value
    await expect(page.locator(".log-gap")).to_contain_text("Events 1–11,902 are not shown")
    await expect(page.get_by_role("button", name="Load more events")).to_be_hidden()
    await page.get_by_role("button", name="Show from the start").click()
    await expect(rows.first).to_have_attribute("data-seq", "1")

    # A running execution has no event count yet: the end is found by probing the cursor.
    running = await ui.call(
        "POST",
        "/executions/repl",
        {
            "session_id": sid,
            "input": "for (let i = 0; i < 3000; i++) console.log(i);"
            " await new Promise(r => setTimeout(r, 60000))",  # still running when the page looks
            "wait": False,
        },
    )
    await page.goto(ui.url(f"/executions/{running['id']}?page_size=100"))
    await expect(rows).to_have_count(100)

    async def all_lines_stored() -> bool:  # the loop has logged its 3,000 lines, then waits
        last = await ui.call("GET", f"/executions/{running['id']}/events?after_seq=3000")
        return bool(last)

    await eventually(all_lines_stored)
    await page.get_by_role("button", name="Jump to the end").click()
    await expect(rows.last).to_have_attribute("data-seq", "3001")
    await ui.call("POST", f"/executions/{running['id']}/cancel")


async def test_ansi_colours_become_spans_and_html_stays_text(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    code = (
        r"console.log('\x1b[31mred\x1b[0m \x1b[1;92mbold\x1b[22;39m \x1b[44mbg\x1b[49m "
        r"<b>tag</b> \x1b[38;5;208morange\x1b[0m \x1b[2Kdone')"
    )
    block = await run(page, code)
    line = block.locator(".line.console")
    assert await line.inner_text() == "red bold bg <b>tag</b> orange done"
    assert "\x1b" not in await line.text_content()
    assert await line.locator("b").count() == 0  # HTML is shown as text
    await expect(line.locator(".ansi-fg-1")).to_have_text("red")
    await expect(line.locator(".ansi-fg-10.ansi-bold")).to_have_text("bold")
    await expect(line.locator(".ansi-bg-4")).to_have_text("bg")
    orange = line.locator("span", has_text="orange")
    assert await orange.evaluate("(el) => getComputedStyle(el).color") == "rgb(255, 135, 0)"
    colours = await line.evaluate(
        "(el) => [getComputedStyle(el).color, ...['.ansi-fg-1', '.ansi-fg-10']"
        ".map((s) => getComputedStyle(el.querySelector(s)).color)]"
    )
    assert len(set(colours)) == 3, colours
    await shot(page, "ansi")

    # The execution page's log colours them too.
    await page.goto(ui.url(f"/executions/{await block.get_attribute('data-execution-id')}"))
    await expect(page.locator("#events-body .ansi-fg-1")).to_have_text("red")


async def test_a_long_value_is_marked_and_can_be_shown_and_copied_whole(browser: Any, ui: Ui) -> None:
    context, page, problems = await new_page(browser)
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    sid = await ui.session()
    await open_repl(page, ui, sid)
    block = await run(page, "'x'.repeat(20000) + 'END'")
    value = block.locator(".line.value")
    await expect(value.locator(".vt-truncated")).to_have_text("… 10,003 more characters")
    preview = await value.locator(".vt-preview").inner_text()
    assert preview.startswith("'xxx") and not preview.endswith("'")  # no fake closing quote
    assert "END" not in preview

    await value.get_by_role("button", name="show all").click()
    whole = await value.locator(".value-full").inner_text()
    assert whole == "'" + "x" * 20000 + "END'"
    await value.get_by_role("button", name="show less").click()
    await expect(value.locator(".vt-truncated")).to_be_visible()

    await value.get_by_role("button", name="copy value").click()
    await expect(value.get_by_role("button", name="copied ✓")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == "x" * 20000 + "END"

    # Every value can be copied: an object as pretty JSON.
    small = await run(page, "({a: 1, b: [true, null]})")
    await small.locator(".line.value").hover()
    await small.get_by_role("button", name="copy value").click()
    assert await page.evaluate("navigator.clipboard.readText()") == (
        '{\n  "a": 1,\n  "b": [\n    true,\n    null\n  ]\n}'
    )
    # And the input of an entry.
    await small.locator(".exec-row").hover()
    await small.get_by_role("button", name="copy input").click()
    assert await page.evaluate("navigator.clipboard.readText()") == "({a: 1, b: [true, null]})"

    # The execution page: the whole-width result carries the same marker and actions.
    await page.goto(ui.url(f"/executions/{await block.get_attribute('data-execution-id')}"))
    result = page.locator("#exec-outcome")
    await expect(result.locator(".vt-truncated")).to_be_visible()
    await result.get_by_role("button", name="show all").click()
    assert (await result.locator(".value-full").inner_text()).endswith("END'")
    box = await result.bounding_box()
    assert box["width"] > 1000  # full width, not a narrow column
    await context.close()
    assert problems.errors == []


async def test_a_syntax_error_shows_a_code_frame_with_a_caret(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)

    async def frame(code: str) -> tuple[list[str], Any]:
        block = await run(page, code)
        await expect(block.locator(".exec-head .badge")).to_have_text("error")
        el = block.locator(".code-frame")
        return (await el.inner_text()).split("\n"), el

    async def caret_under(el: Any, column: int) -> None:
        # The caret's left edge is that of the source character at `column` (1-based).
        xs = await el.evaluate(
            """(el, column) => {
                const text = el.childNodes[1], range = document.createRange();
                range.setStart(text, column - 1); range.setEnd(text, column);
                const caret = el.querySelector('.cf-caret'), r2 = document.createRange();
                r2.setStart(caret.firstChild, caret.textContent.length - 1);
                r2.setEnd(caret.firstChild, caret.textContent.length);
                return [range.getBoundingClientRect().left, r2.getBoundingClientRect().left];
            }""",
            column,
        )
        assert abs(xs[0] - xs[1]) < 0.5, xs

    # Acorn's `(line:column)` (its column counts from 0): `let = ;` fails at the `;`.
    lines, el = await frame("let = ;")
    assert lines == ["1 | let = ;", "  |       ^"]
    await caret_under(el, 7)
    lines, el = await frame("let a = 1;\nfoo(\n  1 2)")
    assert lines == ["3 |   1 2)", "  |     ^"]
    await caret_under(el, 5)
    # QuickJS's own format names the line and the token.
    lines, el = await frame("1 +\n  *3")
    assert lines == ["2 |   *3", "  |   ^"]
    await shot(page, "code-frame")

    block = page.locator(".exec").first
    await page.goto(ui.url(f"/executions/{await block.get_attribute('data-execution-id')}"))
    await expect(page.locator("#exec-outcome .code-frame")).to_have_text("1 | let = ;\n  |       ^")


async def test_history_comes_from_the_server_and_other_tabs(browser: Any, ui: Ui) -> None:
    sid = await ui.session()
    for code in ("var fromCli = 1", "fromCli + 1"):
        await ui.call("POST", "/executions/repl", {"session_id": sid, "input": code})

    context, page, problems = await new_page(browser)  # a fresh browser: nothing stored locally
    await open_repl(page, ui, sid)
    await page.locator("#repl-input").focus()
    await page.keyboard.press("ArrowUp")
    assert await editor_text(page) == "fromCli + 1"
    await page.keyboard.press("ArrowUp")
    assert await editor_text(page) == "var fromCli = 1"
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowDown")
    assert await editor_text(page) == ""

    # Input typed elsewhere while the page is open (the CLI here) joins the history live.
    await ui.call("POST", "/executions/repl", {"session_id": sid, "input": "'from the cli'"})
    await expect(page.locator(".exec")).to_have_count(3)
    await page.keyboard.press("ArrowUp")
    assert await editor_text(page) == "'from the cli'"

    # A second tab of the same browser sees the first tab's input on its first ↑.
    other = await context.new_page()
    await open_repl(other, ui, sid)
    await replace_input(page, "")
    await run(page, "'typed in tab 1'")
    await other.locator("#repl-input").focus()
    await other.keyboard.press("ArrowUp")
    assert await editor_text(other) == "'typed in tab 1'"
    await context.close()
    assert problems.errors == []


async def test_every_entry_shows_when_it_ran_on_hover(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    block = await run(page, "6 * 7")
    eid = await block.get_attribute("data-execution-id")
    started = (await ui.call("GET", f"/executions/{eid}"))["started_at"]
    local = await page.evaluate("(iso) => new Date(iso).toLocaleString()", started)
    time = block.locator("time.exec-time")
    await expect(time).to_have_attribute("datetime", started)
    await expect(time).to_have_attribute("title", f"Started {local}")
    await expect(block.locator(".exec-input")).to_have_attribute("title", f"Started {local}")
    await block.hover()
    await expect(time).to_have_css("opacity", "1")
    assert re.fullmatch(r"\d\d:\d\d:\d\d", await time.inner_text())


async def test_a_closed_session_offers_a_new_session_from_its_template(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await ui.call("POST", f"/sessions/{sid}/close")
    await page.goto(ui.url(f"/sessions/{sid}"))
    await page.locator("#session-status[data-status=closed]").wait_for()
    template = await page.locator("#session-template").inner_text()
    button = page.get_by_role("button", name="New session from this template")
    await button.click()
    await page.wait_for_url(
        lambda url: sid not in url and re.search(r"/sessions/[0-9a-f-]{36}$", url) is not None
    )
    await page.locator("#session-status[data-status=ready]").wait_for()
    assert await page.locator("#session-template").inner_text() == template
    await expect(button).to_be_hidden()


async def test_the_placeholder_fits_on_a_phone(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await page.set_viewport_size({"width": 375, "height": 740})
    await open_repl(page, ui, sid)
    fits = await page.evaluate(
        """() => {
            const ph = document.querySelector('#repl-editor .cm-placeholder');
            const box = document.querySelector('#repl-editor').getBoundingClientRect();
            const r = ph.getBoundingClientRect();
            return r.width > 0 && r.right <= box.right + 0.5 && r.bottom <= box.bottom + 0.5
                && ph.scrollWidth <= ph.clientWidth + 1;
        }"""
    )
    assert fits
    await shot(page, "narrow-repl")
