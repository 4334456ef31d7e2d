"""The browser UI end to end: a real server, a real headless Chromium, asserting what a user sees."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.ui_support import (
    STREAM_200,
    Ui,
    answer_dialogs,
    console_lines,
    editor_text,
    open_repl,
    replace_input,
    run,
    shot,
)

# One browser for the whole module: every test and fixture here runs on the module's loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


# ------------------------------------------------------------------------------- templates


async def test_create_a_template_and_a_session_through_the_ui(page: Any, ui: Ui) -> None:
    (ui.worktree / "init.js").write_text("var fromStartup = 7;\n")
    await page.goto(ui.url("/"))
    await page.get_by_role("link", name="Templates").click()
    await page.get_by_label("Name").fill("data-tools")
    await page.get_by_role("button", name="Create template").click()
    await page.wait_for_url(re.compile(r"/templates/[0-9a-f-]{36}$"))
    assert await page.locator("#template-title").inner_text() == "data-tools"

    # Limits and runtime settings are saved with PATCH and survive a reload.
    await page.get_by_label("Wall time (ms)").fill("3000")
    await page.get_by_role("button", name="Save limits").click()
    await page.get_by_text("Limits saved.").wait_for()
    await page.get_by_label("Strict mode").check()
    await page.get_by_role("button", name="Save runtime settings").click()
    await page.get_by_text("Runtime settings saved.").wait_for()
    # Modules come from the catalog; toggling one enables it on the template.
    await page.locator("#modules-fs").check()
    await page.get_by_text("fs enabled.").wait_for()
    await page.locator("#startup-path").fill("init.js")
    await page.get_by_role("button", name="Add startup file").click()
    await page.locator("#startup-body td", has_text="init.js").wait_for()
    await page.locator("#cap-name").fill("HOME")
    await page.locator("#cap-kind").select_option("env")
    await page.get_by_role("button", name="Add capability").click()
    await page.locator("#caps-body td", has_text="HOME").wait_for()

    await page.reload()
    await page.locator("#template-title", has_text="data-tools").wait_for()
    assert await page.get_by_label("Wall time (ms)").input_value() == "3000"
    assert await page.get_by_label("Strict mode").is_checked()
    await page.locator("#modules-fs:checked").wait_for()
    # The library catalog is listed (one checkbox per entry, not the "Loading…" line).
    await page.locator("#libraries-list input[type=checkbox]").first.wait_for()
    assert await page.locator("#libraries-list input[type=checkbox]").count() == 4

    await page.get_by_label("Worktree path").fill(str(ui.worktree))
    await page.get_by_role("button", name="Create session").click()
    await page.wait_for_url(re.compile(r"/sessions/[0-9a-f-]{36}$"))
    await page.locator("#session-status[data-status=ready]").wait_for()
    assert await page.locator("#session-template").inner_text() == "data-tools"
    assert await page.locator("#session-worktree").inner_text() == str(ui.worktree)
    await page.locator("#conn-state[data-state=live]").wait_for()
    # The startup file ran (its execution is shown) and its state is there.
    assert await page.locator(".exec .kind", has_text="startup").count() == 1
    block = await run(page, "fromStartup * 6")
    assert (await block.locator(".line.value").inner_text()).split()[-1] == "42"


async def test_an_api_error_is_shown_with_its_message(page: Any, ui: Ui) -> None:
    await ui.call("POST", "/templates", {"name": "taken"})
    await page.goto(ui.url("/templates"))
    await page.get_by_label("Name").fill("taken")
    await page.get_by_role("button", name="Create template").click()
    alert = page.locator(".flash.error")
    await alert.wait_for()
    text = await alert.inner_text()
    assert "CONFLICT" in text
    assert "taken" in text  # the server's own message names the duplicate

    # A bad worktree path shows the server's INVALID_PATH message on the sessions page.
    await page.goto(ui.url("/sessions"))
    await page.locator("#session-template option", has_text="taken").wait_for(state="attached")
    await page.get_by_label("Worktree path").fill("relative/dir")
    await page.get_by_role("button", name="Create session").click()
    alert = page.locator(".flash.error", has_text="INVALID_PATH")
    await alert.wait_for()
    assert "relative/dir" in await alert.inner_text()


# ------------------------------------------------------------------------------- REPL


async def test_console_output_then_the_value(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    block = await run(page, "console.log('a'); 40 + 2")
    lines = await block.locator(".exec-out > *").all_inner_texts()
    assert lines[0] == "a"
    assert lines[1].split()[-1] == "42"
    assert await block.locator(".exec-head .badge").inner_text() == "ok"
    assert await block.locator(".exec-input").inner_text() == "console.log('a'); 40 + 2"


async def test_lines_arrive_while_the_execution_is_still_running(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    await run(page, STREAM_200, wait=False)
    # Seen together, in one look at the page: some lines are there and the status is running.
    await page.wait_for_function(
        """() => {
            const b = document.querySelector('.exec:last-of-type');
            return b && b.dataset.status === 'running' && b.querySelectorAll('.line.console').length > 0;
        }"""
    )
    block = page.locator(".exec").last
    await block.locator(".exec-head .badge[data-status=ok]").wait_for()
    assert await console_lines(block) == [f"line {i}" for i in range(200)]


async def test_cancel_stops_a_busy_loop_and_the_session_goes_on(page: Any, ui: Ui) -> None:
    sid = await ui.session(wall_ms=30_000, cpu_ms=30_000)
    await open_repl(page, ui, sid)
    block = await run(page, "while (true) {}", wait=False)
    cancel = block.get_by_role("button", name="Cancel")
    await cancel.click()
    await block.locator(".exec-head .badge[data-status=cancelled]").wait_for()
    assert await cancel.is_hidden()
    block = await run(page, "1 + 1")
    assert (await block.locator(".line.value").inner_text()).split()[-1] == "2"


async def test_an_exception_shows_its_message_and_stack(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    block = await run(page, "function boom() { throw new TypeError('it broke') }\nboom()")
    exc = block.locator(".line.exception")
    assert await exc.locator(".exc-message").inner_text() == "TypeError: it broke"
    assert "boom" in await exc.inner_text()
    assert await block.locator(".exec-head .badge").inner_text() == "error"


async def test_keyboard_enter_shift_enter_and_history_across_a_reload(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    box = page.locator("#repl-input")
    await box.focus()
    await page.keyboard.type("var x = 20")
    await page.keyboard.press("Enter")
    await page.locator(".exec .badge[data-status=ok]").wait_for()
    await page.keyboard.type("x +")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("1")
    assert await editor_text(page) == "x +\n  1"
    await page.keyboard.press("Enter")
    await page.locator(".exec").nth(1).locator(".badge[data-status=ok]").wait_for()
    assert "21" in await page.locator(".exec").nth(1).locator(".line.value").inner_text()

    await page.reload()
    await page.locator("#conn-state[data-state=live]").wait_for()
    assert await page.locator(".exec").count() == 2  # earlier executions are shown again
    await box.focus()
    await page.keyboard.press("ArrowUp")
    assert await editor_text(page) == "x +\n  1"
    await page.keyboard.press("ArrowUp")
    assert await editor_text(page) == "var x = 20"
    await page.keyboard.press("ArrowDown")
    assert await editor_text(page) == "x +\n  1"


async def test_a_dropped_socket_mid_stream_loses_and_repeats_nothing(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    n = 300
    code = (
        f"await new Promise(r => {{ let i = 0; const t = setInterval(() => {{ console.log('line ' + i); "
        f"if (++i === {n}) {{ clearInterval(t); r(); }} }}, 4) }})"
    )
    block = await run(page, code, wait=False)
    for at_least in (20, 120):
        await page.wait_for_function(
            f"() => document.querySelectorAll('.exec:last-of-type .line.console').length >= {at_least}"
        )
        await page.evaluate("window.__vmDropSocket()")
        await page.locator("#conn-state[data-state=down]").wait_for()
    await page.locator("#conn-state[data-state=live]").wait_for()
    await block.locator(".exec-head .badge[data-status=ok]").wait_for()
    assert await console_lines(block) == [f"line {i}" for i in range(n)]


async def test_a_reload_mid_stream_loses_and_repeats_nothing(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    await run(page, STREAM_200.replace("}, 5)", "}, 8)"), wait=False)
    await page.wait_for_function("() => document.querySelectorAll('.exec .line.console').length >= 10")
    await page.reload()
    block = page.locator(".exec").last
    await block.locator(".exec-head .badge[data-status=ok]").wait_for()
    assert await console_lines(block) == [f"line {i}" for i in range(200)]


async def test_a_server_restart_shows_reconnecting_and_resumes(page: Any, ui: Ui) -> None:
    sid = await ui.session(wall_ms=60_000)
    await open_repl(page, ui, sid)
    port = ui.server.port
    await run(page, "let i = 0; setInterval(() => console.log('line ' + (++i)), 3); 'started'")
    # The REPL input ends at once; its timer runs on in the session's background execution.
    block = page.locator(".exec[data-kind=background]")
    await page.wait_for_function("() => document.querySelectorAll('.exec .line.console').length >= 30")

    await ui.server.close()
    banner = page.locator("#conn-banner")
    await banner.wait_for()
    assert "reconnecting" in (await banner.inner_text()).lower()

    await ui.start(port=port)
    await banner.wait_for(state="hidden")
    await page.locator("#conn-state[data-state=live]").wait_for()
    # The old process's session cannot survive a restart: the page says so instead of going dead.
    await page.locator("#session-status[data-status=closed]").wait_for()
    await block.locator(".exec-head .badge[data-status=error]").wait_for()
    assert await page.locator("#session-error").inner_text()  # why it closed, in the server's words
    assert await page.locator("#repl-input").get_attribute("aria-disabled") == "true"
    assert await page.locator("#repl-input").get_attribute("contenteditable") == "false"
    # Every stored line is shown once and in order, with no gap.
    stored = await ui.call(
        "GET", f"/executions/{await block.get_attribute('data-execution-id')}/events?limit=10000"
    )
    expected = [e["payload"]["text"] for e in stored if e["type"] == "console"]
    shown = await console_lines(block)
    assert shown == expected
    assert shown == [f"line {i}" for i in range(1, len(shown) + 1)]


async def test_value_tree_expands_and_levels_look_different(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await page.set_viewport_size({"width": 1280, "height": 1000})
    await open_repl(page, ui, sid)
    await run(page, "console.log('hello from vm-system'); console.info('3 workers ready'); 'ok'")
    await run(
        page,
        "console.debug('cache miss: users'); console.warn('slow query: 412 ms'); "
        "console.error('retrying request 2/3'); [1, 2, 3].map(n => n * n)",
    )
    block = await run(
        page, "({ name: 'vm-system', tags: ['repl', 'quickjs'], limits: { cpu_ms: 2000, wall_ms: 5000 } })"
    )
    await block.locator(".vt-root > summary").click()
    children = block.locator(".vt-root > .vt-children")
    await children.wait_for()
    assert await children.locator(":scope > li > .vt-node > summary .vt-key", has_text="tags").count() == 1
    await children.locator("summary", has_text="limits").click()
    await block.locator(".vt-leaf", has_text="cpu_ms").wait_for()
    await run(page, "users.find(u => u.admin)")
    # Level styles: warn, error and debug lines look different from plain log lines.
    colors = await page.evaluate(
        """() => ['log', 'warn', 'error', 'debug'].map(l => {
            const el = document.querySelector('.line.level-' + l);
            return el && getComputedStyle(el).color;
        })"""
    )
    assert len(set(colors)) == 4, colors


async def test_sessions_list_filter_close_history_and_event_log(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    other = await ui.session()
    for code in ("1", "for (let i = 0; i < 250; i++) console.log('row ' + i)"):
        await ui.call("POST", "/executions/repl", {"session_id": sid, "input": code})

    await page.goto(ui.url("/sessions"))
    row = page.locator(f"tr[data-session-id='{other}']")
    dialogs = await answer_dialogs(page, accept=True)
    await row.get_by_role("button", name=re.compile("Close")).click()
    await row.locator(".badge[data-status=closed]").wait_for()
    questions = await dialogs.wait()
    assert len(questions) == 1 and "cancelled" in questions[0]
    await page.get_by_label("Status").select_option("closed")
    # Wait for the filtered rows themselves, not a "Loading…" placeholder row.
    await page.wait_for_function(
        "() => document.querySelectorAll('#sessions-body tr').length === 1"
        " && document.querySelectorAll('#sessions-body tr[data-session-id]').length === 1"
    )
    assert await page.locator(f"tr[data-session-id='{other}']").count() == 1

    await page.goto(ui.url(f"/sessions/{sid}/history"))
    rows = page.locator("#history-body tr[data-execution-id]")  # not the "Loading…" row
    await rows.first.wait_for()
    assert await rows.count() == 2
    assert "row" in await rows.nth(0).inner_text()  # newest first
    await rows.nth(0).get_by_role("link").first.click()
    await page.wait_for_url(re.compile(r"/executions/"))
    await page.goto(page.url + "?page_size=100")
    more = page.get_by_role("button", name="Load more events")
    for shown in (100, 200, 252):  # input echo + 250 lines + value, 100 per page
        await page.wait_for_function(f"() => document.querySelectorAll('#events-body tr').length === {shown}")
        if shown < 252:
            await more.click()
    await more.wait_for(state="hidden")
    seqs = [int(s) for s in await page.locator("#events-body tr td:first-child").all_inner_texts()]
    assert seqs == list(range(1, 253))


async def test_narrow_screen_has_no_horizontal_scroll(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await page.set_viewport_size({"width": 375, "height": 740})
    await open_repl(page, ui, sid)
    await run(page, "console.log('x'.repeat(300)); ({ long: 'y'.repeat(200) })")
    for path in (f"/sessions/{sid}", "/sessions", "/templates"):
        await page.goto(ui.url(path))
        await page.wait_for_load_state("networkidle")
        overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"


async def test_a_token_given_once_in_the_url_is_used_for_rest_and_the_socket(
    page: Any, ui_with_token: Ui
) -> None:
    ui = ui_with_token
    sid = await ui.session()
    await page.goto(ui.url(f"/sessions/{sid}?token=s3cret"))
    await page.locator("#conn-state[data-state=live]").wait_for()
    assert "token" not in page.url  # kept in a cookie, not in the address bar
    (cookie,) = await page.context.cookies()
    assert cookie["value"] == "s3cret" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""  # out of reach of any script
    block = await run(page, "6 * 7")
    assert (await block.locator(".line.value").inner_text()).split()[-1] == "42"
    await page.get_by_role("link", name="Sessions", exact=True).first.click()
    await page.locator(f"tr[data-session-id='{sid}']").wait_for()

    # Without the token the API's own UNAUTHORIZED message is shown, not an empty page.
    await page.context.clear_cookies()
    await page.reload()
    alert = page.locator(".flash.error", has_text="UNAUTHORIZED").first
    await alert.wait_for()
    assert "?token=" in await alert.inner_text()


# ------------------------------------------------------------------------------- QA fixes


async def test_value_tree_shows_maps_sets_dates_and_functions_as_they_are(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    block = await run(
        page, "({m: new Map([['k', 1]]), s: new Set([1]), f(){}, d: new Date(0), o: {a: [1, {b: 2}]}})"
    )
    await block.locator(".vt-root > summary").click()
    entries = block.locator(".vt-root > .vt-children > li")
    await entries.first.wait_for()
    texts = [" ".join(t.split()) for t in await entries.all_inner_texts()]
    assert texts[:4] == [
        "m: Map(1) { 'k' => 1 }",
        "s: Set(1) { 1 }",
        "f: [Function: f]",
        "d: 1970-01-01T00:00:00.000Z",
    ], texts
    # Those are leaves (nothing to open, so no misleading `{}` inside)…
    for i in range(4):
        assert await entries.nth(i).locator("details").count() == 0
    assert await block.locator(".vt-children", has_text=re.compile(r"^\{\}$")).count() == 0
    # …while plain objects and arrays open, past the preview's depth from the JSON, so tagged.
    await entries.nth(4).locator("summary", has_text="o").first.click()
    await block.locator("summary", has_text=re.compile(r"^a")).click()
    deep = block.locator("details.vt-node summary", has_text="JSON")
    await deep.click()
    await block.locator(".vt-leaf", has_text="b: 2").wait_for()
    await shot(page, "value-tree")

    # A Date on its own is shown as its preview, not a tree; a Map or a Set opens from its
    # entries (test_ui_repl_live.py), never from its `{}` JSON.
    for code, preview, opens in (
        ("new Map([['k', 1]])", "Map(1) { 'k' => 1 }", True),
        ("new Set([1, 2])", "Set(2) { 1, 2 }", True),
        ("new Date(0)", "1970-01-01T00:00:00.000Z", False),
    ):
        block = await run(page, code)
        assert await block.locator(".vt-root").count() == (1 if opens else 0)
        assert await block.locator(".vt-preview").first.inner_text() == preview
        assert await block.locator(".vt-json-tag").count() == 0


INCOMPLETE = {
    "1 + 1": False,
    "function f() {": True,
    "f(1,": True,
    "[1, 2": True,
    "'abc": True,
    "`abc ${x": True,
    "`a ${ {a: 1}.a } b`": False,
    "x +": True,
    "let y =": True,
    "i++": False,
    "a =>": True,
    "/* open comment": True,
    "x // a comment {": False,
    "'{'": False,
    "/[(]/.test('(')": False,
    "})": False,
    "if (x) {\n  y()\n}": False,
}


async def test_enter_on_an_unfinished_statement_adds_a_line(page: Any, ui: Ui) -> None:
    sid = await ui.session()
    await open_repl(page, ui, sid)
    verdicts = await page.evaluate(
        "async (cases) => { const m = await import('/static/js/incomplete.js');"
        " return cases.map((c) => m.isIncomplete(c)); }",
        list(INCOMPLETE),
    )
    assert dict(zip(INCOMPLETE, verdicts, strict=True)) == INCOMPLETE

    box = page.locator("#repl-input")
    await box.focus()
    # The editor helps while typing: the brace closes itself, Enter inside the fresh pair opens
    # it up (indented), and Enter on the then complete input runs it.
    await page.keyboard.type("function twice(n) {")
    assert await editor_text(page) == "function twice(n) {}"
    await page.keyboard.press("Enter")
    assert await editor_text(page) == "function twice(n) {\n  \n}"
    await page.keyboard.type("return n * 2")
    assert await page.locator(".exec").count() == 0  # nothing ran yet
    await page.keyboard.press("Enter")  # now complete: it runs
    first = page.locator(".exec").first
    await first.locator(".badge[data-status=ok]").wait_for()
    assert await editor_text(page) == ""

    # The multi-line input keeps its lines and indentation in the log: "function" and "}"
    # start at the same column, "return" two characters further in.
    assert await first.locator(".exec-input").inner_text() == "function twice(n) {\n  return n * 2\n}"
    starts = await first.locator(".exec-input").evaluate(
        """(el) => {
            const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT), nodes = [];
            for (let n = walker.nextNode(); n; n = walker.nextNode()) nodes.push(n);
            const at = (i) => {
                for (const t of nodes) { if (i < t.data.length) return [t, i]; i -= t.data.length; }
            };
            const range = document.createRange();
            const x = (i) => { const [t, o] = at(i); range.setStart(t, o); range.setEnd(t, o + 1);
                               return range.getBoundingClientRect().left; };
            const s = nodes.map((t) => t.data).join('');
            const l2 = s.indexOf('\\n') + 1, l3 = s.lastIndexOf('\\n') + 1;
            return [x(0), x(l2 + 2), x(l3), x(l2 + 2) - x(l2 + 1)];
        }"""
    )
    line1, line2_text, line3, char_w = starts
    assert abs(line1 - line3) < 0.5, starts
    assert abs(line2_text - line1 - 2 * char_w) < 0.5, starts

    # A trailing operator: Enter adds a line (indented as a continuation). Shift+Enter always does.
    await page.keyboard.type("twice(20) +")
    await page.keyboard.press("Enter")
    await page.keyboard.type("2")
    assert await editor_text(page) == "twice(20) +\n  2"
    await page.keyboard.press("Enter")
    second = page.locator(".exec").nth(1)
    await second.locator(".badge[data-status=ok]").wait_for()
    assert (await second.locator(".line.value").inner_text()).split()[-1] == "42"
    await shot(page, "multiline-input")
    await replace_input(page, "'unterminated")  # as pasted: no closing quote
    await page.keyboard.press("Enter")
    assert (await editor_text(page)).rstrip(" ") == "'unterminated\n"  # a new line, not a run
    await replace_input(page, "1")
    await page.keyboard.press("Shift+Enter")
    assert await editor_text(page) == "1\n"

    # Ctrl+Enter runs whatever is there: the server reports the syntax error.
    await replace_input(page, "twice(")
    await page.keyboard.press("Control+Enter")
    third = page.locator(".exec").nth(2)
    await third.locator(".badge[data-status=error]").wait_for()
    assert "SyntaxError" in await third.locator(".line.exception").inner_text()
