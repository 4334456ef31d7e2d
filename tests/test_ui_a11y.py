"""Accessibility and colour schemes: axe-core finds nothing on any page, light or dark; dark mode
covers the whole page; the README's screenshots of the REPL are taken here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe

from tests.ui_support import ROOT, Ui, expect, new_page, open_repl, run

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Every rule of axe-core's WCAG 2.0/2.1 A and AA sets and its best practices.
AXE_OPTIONS = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]},
    "resultTypes": ["violations"],
}


async def build_pages(ui: Ui) -> list[tuple[str, str]]:
    """Every page of the UI, each with data on it: (path, a selector to wait for)."""
    (ui.worktree / "task.js").write_text("console.log('from a file'); 1\n")
    sid = await ui.session()
    tpl = (await ui.call("GET", f"/sessions/{sid}"))["vm_id"]
    await ui.call("PATCH", f"/templates/{tpl}", {"settings": {"limits": {"wall_ms": 4000}}})
    await ui.call("POST", f"/templates/{tpl}/startup-files", {"path": "task.js"})
    await ui.call("POST", f"/templates/{tpl}/capabilities", {"kind": "env", "name": "HOME"})
    inputs = [
        "console.log('plain'); console.info('info'); console.warn('warn'); console.error('error');"
        " console.debug('debug'); ({ name: 'x', list: [1, 'two', null, true], big: 3n.toString() })",
        r"console.log('\x1b[31mred\x1b[0m \x1b[1;32mgreen\x1b[0m \x1b[33;44myellow on blue\x1b[0m"
        r" \x1b[90mgrey\x1b[0m')",
        "'x'.repeat(12000)",
        "let = ;",
        "function boom() { throw new TypeError('it broke') }\nboom()",
        "console.table([{ name: 'a', n: 1 }, { name: 'b', n: 2 }]); console.log('user', { id: 7 });"
        " new Map([['k', { a: 1 }]])",
    ]
    ids = []
    for code in inputs:
        ex = await ui.call("POST", "/executions/repl", {"session_id": sid, "input": code})
        ids.append(ex["id"])
    # A background execution still running, with its "Stop timers" button.
    await ui.call(
        "POST",
        "/executions/repl",
        {
            "session_id": sid,
            "input": "setInterval(() => console.log('tick'), 300); 1",
            "timers": "background",
        },
    )
    closed = await ui.session()
    await ui.call("POST", f"/sessions/{closed}/close")
    return [
        ("/sessions", "#sessions-body tr[data-session-id]"),
        ("/templates", "#templates-body tr"),
        (f"/templates/{tpl}", "#startup-body td"),
        (f"/sessions/{sid}", "#conn-state[data-state=live]"),
        (f"/sessions/{closed}", "#session-status[data-status=closed]"),
        (f"/sessions/{sid}/history", "#history-body tr[data-execution-id]"),
        (f"/executions/{ids[0]}", "#events-body tr"),
        (f"/executions/{ids[1]}", "#events-body .ansi-fg-1"),
        (f"/executions/{ids[2]}", "#exec-outcome .vt-truncated"),
        (f"/executions/{ids[3]}", "#exec-outcome .code-frame"),
        (f"/executions/{ids[4]}", "#events-body .exc-stack"),
        (f"/executions/{ids[5]}", "#events-body .console-table"),
        ("/nothing-here", "h1"),
        ("/sessions/not-an-id", "h1"),
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_axe_finds_no_violation_on_any_page(browser: Any, ui: Ui, scheme: str) -> None:
    pages = await build_pages(ui)
    repl = pages[3][0]
    context, page, problems = await new_page(browser, color_scheme=scheme)
    axe = Axe()
    found = {}
    for path, ready in pages:
        await page.goto(ui.url(path))
        await page.locator(ready).first.wait_for()
        await page.wait_for_load_state("networkidle")
        if path == repl:
            # Open the value trees (a result, a Map, a console argument), show the hover-only
            # actions of one entry and the completion list, as a user would.
            await page.locator(".exec[data-kind=background] .line.console").first.wait_for()
            for tree in await page.locator(".exec .vt-root > summary").all():
                await tree.click()
            await page.locator(".exec").first.hover()
            await page.locator("#repl-input").focus()
            await page.keyboard.type("Math.m")
            await page.keyboard.press("Tab")
            await page.locator(".cm-tooltip-autocomplete").wait_for()
        results = await axe.run(page, options=AXE_OPTIONS)
        if results.violations_count:
            found[path] = results.generate_report()
    await context.close()
    assert found == {}, "\n\n".join(f"{path}:\n{report}" for path, report in found.items())
    assert problems.errors == []


async def test_dark_mode_covers_the_whole_page_and_screenshots(browser: Any, ui: Ui, tmp_path: Path) -> None:
    # A short worktree path for the README's pictures (not the test's own deep temporary one).
    with tempfile.TemporaryDirectory(prefix="demo-") as short:
        ui.worktree = Path(short)
        sid = await ui.session()
        await check_schemes_and_take_screenshots(browser, ui, sid, tmp_path)


async def check_schemes_and_take_screenshots(browser: Any, ui: Ui, sid: str, tmp_path: Path) -> None:
    for scheme in ("light", "dark"):
        context, page, problems = await new_page(
            browser, color_scheme=scheme, viewport={"width": 1280, "height": 900}
        )
        await open_repl(page, ui, sid)
        if scheme == "light":
            await run(page, "console.log('hello from vm-system'); console.info('3 workers ready'); 'ok'")
            await run(
                page, r"console.log('\x1b[32m✔\x1b[0m build \x1b[1mdone\x1b[0m in \x1b[33m1.2 s\x1b[0m')"
            )
            block = await run(
                page,
                "console.table([{ service: 'web', status: 'up', ms: 12 },"
                " { service: 'db', status: 'up', ms: 3 }])\n"
                "new Map([['web', { port: 8080 }], ['db', { port: 5432 }]])",
            )
            await block.locator(".vt-root > summary").click()
            block = await run(
                page,
                "const config = { name: 'vm-system', tags: ['repl', 'quickjs'],"
                " limits: { cpu_ms: 2000 } }\nconfig",
            )
            await block.locator(".vt-root > summary").click()
            await run(page, "let = ;")
            await run(
                page, "setInterval(() => console.log('heartbeat', ++beats), 400); var beats = 0; 'started'"
            )
        # The timers' output streams into the background block, kept at the bottom.
        await page.locator(".exec[data-kind=background] .line.console").nth(2).wait_for()
        colours = await page.evaluate(
            """() => ['body', 'main', '.card, .session-head', '.topbar'].map((s) => {
                const el = document.querySelector(s); const cs = getComputedStyle(el);
                return [cs.backgroundColor, cs.color];
            })"""
        )
        body_bg, body_fg = colours[0]
        luminance = await page.evaluate(
            """(c) => { const [r, g, b] = c.match(/[\\d.]+/g).map(Number);
               return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255; }""",
            body_bg,
        )
        if scheme == "dark":
            assert luminance < 0.15, colours  # a dark page, not only a dark console
            assert await page.evaluate("() => matchMedia('(prefers-color-scheme: dark)').matches")
        else:
            assert luminance > 0.85, colours
        await page.locator("#repl-input").focus()
        await page.keyboard.type("config.")
        await page.keyboard.press("Tab")  # the completion list, from the session's own state
        await page.locator(".cm-tooltip-autocomplete li").nth(2).wait_for()
        # The README's screenshots: refreshed on request (VM_SYSTEM_SCREENSHOTS=1), never by a
        # plain test run, which must leave the checkout as it found it.
        shots = ROOT / "docs" if os.environ.get("VM_SYSTEM_SCREENSHOTS") == "1" else tmp_path
        await page.screenshot(path=str(shots / f"screenshot-repl-{scheme}.png"))
        assert (shots / f"screenshot-repl-{scheme}.png").stat().st_size > 10_000
        await context.close()
        assert problems.errors == []


async def test_the_404_page_is_a_page_in_both_schemes(browser: Any, ui: Ui) -> None:
    for scheme in ("light", "dark"):
        context, page, problems = await new_page(browser, color_scheme=scheme)
        response = await page.goto(ui.url("/no/such/page"))
        assert response.status == 404
        await expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
        await expect(page.locator("main")).to_contain_text("/no/such/page")
        await expect(page.get_by_role("link", name="← Sessions")).to_be_visible()
        await context.close()
        assert problems.errors == []
