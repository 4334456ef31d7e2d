"""The browser UI end to end: a real server, a real headless Chromium, asserting what a user sees."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.config import Settings

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "screenshot-repl.png"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)

# One browser for the whole module: every test and fixture here runs on the module's loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")

STREAM_200 = (
    "await new Promise(r => { let i = 0; const t = setInterval(() => { console.log('line ' + i); "
    "if (++i === 200) { clearInterval(t); r(); } }, 5) })"
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is required in CI for the UI tests; run `make browser`")
        pytest.skip(f"UI tests need Debian's Chromium at {CHROMIUM} (`make browser` installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def aiohttp_server() -> AsyncIterator[Any]:
    """pytest-aiohttp's factory, on the module's loop (the shared browser lives there too)."""
    servers: list[TestServer] = []

    async def go(app: web.Application, *, port: int | None = None) -> TestServer:
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        servers.append(server)
        return server

    yield go
    while servers:
        await servers.pop().close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    pg = await context.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    await context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


class Ui:
    """A running server plus REST shortcuts for the state a test does not build through the UI."""

    def __init__(self, aiohttp_server: Any, settings: Settings, worktree: Path) -> None:
        self.aiohttp_server = aiohttp_server
        self.settings = settings
        self.worktree = worktree
        self.server: Any = None

    async def start(self, port: int | None = None) -> None:
        self.server = await self.aiohttp_server(create_app(self.settings), port=port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.request(method, self.url(f"/api/v1{path}"), json=body) as r,
        ):
            data = await r.json()
            assert r.status < 300, data
            return data

    async def session(self, **limits: Any) -> str:
        tpl = await self.call("POST", "/templates", {"name": f"tpl-{os.urandom(4).hex()}"})
        if limits:
            await self.call("PATCH", f"/templates/{tpl['id']}", {"settings": {"limits": limits}})
        s = await self.call(
            "POST",
            "/sessions",
            {
                "template_id": tpl["id"],
                "workspace_id": "ws",
                "base_commit_oid": "abc123",
                "worktree_path": str(self.worktree),
            },
        )
        return str(s["id"])


@pytest_asyncio.fixture(loop_scope="module")
async def ui(aiohttp_server: Any, settings: Settings, worktree: Path) -> Ui:
    u = Ui(aiohttp_server, settings, worktree)
    await u.start()
    return u


@pytest_asyncio.fixture(loop_scope="module")
async def ui_with_token(aiohttp_server: Any, settings: Settings, worktree: Path) -> Ui:
    u = Ui(aiohttp_server, dataclasses.replace(settings, token="s3cret"), worktree)
    await u.start()
    return u


async def open_repl(page: Any, ui: Ui, sid: str) -> None:
    await page.goto(ui.url(f"/sessions/{sid}"))
    await page.locator("#conn-state[data-state=live]").wait_for()


async def run(page: Any, code: str, *, wait: bool = True) -> Any:
    """Type ``code`` into the REPL, press Enter, return the locator of its execution block."""
    before = await page.locator(".exec").count()
    box = page.locator("#repl-input")
    await box.fill(code)
    await box.press("Enter")
    block = page.locator(".exec").nth(before)
    await block.wait_for()
    if wait:
        await block.locator(".exec-head .badge:not([data-status=running])").wait_for()
    return block


async def console_lines(block: Any) -> list[str]:
    return list(await block.locator(".line.console").all_inner_texts())


_DIALOG_HANDLERS: dict[int, Any] = {}


class Dialogs:
    """The questions asked by confirm() since ``answer_dialogs``; ``asked`` is set on each."""

    def __init__(self) -> None:
        self.questions: list[str] = []
        self.asked = asyncio.Event()

    async def wait(self) -> list[str]:
        await asyncio.wait_for(self.asked.wait(), 5)
        return self.questions


async def answer_dialogs(page: Any, *, accept: bool) -> Dialogs:
    """Answer every confirm() from now on (replacing an earlier answerer of this page)."""
    dialogs = Dialogs()

    async def on_dialog(dialog: Any) -> None:
        dialogs.questions.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())
        dialogs.asked.set()

    previous = _DIALOG_HANDLERS.pop(id(page), None)
    if previous is not None:
        page.remove_listener("dialog", previous)
    _DIALOG_HANDLERS[id(page)] = on_dialog
    page.on("dialog", on_dialog)
    return dialogs


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
    assert await box.input_value() == "x +\n1"
    await page.keyboard.press("Enter")
    await page.locator(".exec").nth(1).locator(".badge[data-status=ok]").wait_for()
    assert "21" in await page.locator(".exec").nth(1).locator(".line.value").inner_text()

    await page.reload()
    await page.locator("#conn-state[data-state=live]").wait_for()
    assert await page.locator(".exec").count() == 2  # earlier executions are shown again
    await box.focus()
    await page.keyboard.press("ArrowUp")
    assert await box.input_value() == "x +\n1"
    await page.keyboard.press("ArrowUp")
    assert await box.input_value() == "var x = 20"
    await page.keyboard.press("ArrowDown")
    assert await box.input_value() == "x +\n1"


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
    block = await run(
        page, "let i = 0; setInterval(() => console.log('line ' + (++i)), 3); 'started'", wait=False
    )
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
    assert await page.locator("#repl-input").is_disabled()
    # Every stored line is shown once and in order, with no gap.
    stored = await ui.call(
        "GET", f"/executions/{await block.get_attribute('data-execution-id')}/events?limit=10000"
    )
    expected = [e["payload"]["text"] for e in stored if e["type"] == "console"]
    shown = await console_lines(block)
    assert shown == expected
    assert shown == [f"line {i}" for i in range(1, len(shown) + 1)]


async def test_value_tree_expands_and_screenshot(page: Any, ui: Ui) -> None:
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
    await page.locator("#repl-input").fill("await fetchReport({ since: '2024-01-01' })")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT))


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


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def shot(page: Any, name: str, **options: Any) -> None:
    """A screenshot for a person to look at, kept only when $UI_SHOTS_DIR says where."""
    where = os.environ.get("UI_SHOTS_DIR")
    if where:
        await page.screenshot(path=str(Path(where) / f"{name}.png"), **options)


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

    # A Map, a Set, a Date or a function on its own is shown as its preview, not a tree.
    for code, preview in (
        ("new Map([['k', 1]])", "Map(1) { 'k' => 1 }"),
        ("new Set([1, 2])", "Set(2) { 1, 2 }"),
        ("new Date(0)", "1970-01-01T00:00:00.000Z"),
    ):
        block = await run(page, code)
        assert await block.locator(".vt-root").count() == 0
        assert await block.locator(".vt-preview").inner_text() == preview


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

    # Well-formed but unknown: the API's 404 turns the page into a not-found message, with
    # no forms and no live REPL trying to connect.
    unknown = str(uuid.uuid4())
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    for path, heading in (
        (f"/sessions/{unknown}", "Session not found"),
        (f"/sessions/{unknown}/history", "Session not found"),
        (f"/templates/{unknown}", "Template not found"),
        (f"/executions/{unknown}", "Execution not found"),
    ):
        await page.goto(ui.url(path))
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
    await page.keyboard.type("function twice(n) {")
    await page.keyboard.press("Enter")
    await page.keyboard.type("  return n * 2")
    await page.keyboard.press("Enter")
    await page.keyboard.type("}")
    assert await box.input_value() == "function twice(n) {\n  return n * 2\n}"
    assert await page.locator(".exec").count() == 0  # nothing ran yet
    await page.keyboard.press("Enter")  # now complete: it runs
    first = page.locator(".exec").first
    await first.locator(".badge[data-status=ok]").wait_for()
    assert await box.input_value() == ""

    # The multi-line input keeps its lines and indentation in the log: "function" and "}"
    # start at the same column, "return" two characters further in.
    assert await first.locator(".exec-input").inner_text() == "function twice(n) {\n  return n * 2\n}"
    starts = await first.locator(".exec-input").evaluate(
        """(el) => {
            const text = el.firstChild, range = document.createRange();
            const x = (i) => { range.setStart(text, i); range.setEnd(text, i + 1);
                               return range.getBoundingClientRect().left; };
            const s = text.data, l2 = s.indexOf('\\n') + 1, l3 = s.lastIndexOf('\\n') + 1;
            return [x(0), x(l2 + 2), x(l3), x(l2 + 2) - x(l2 + 1)];
        }"""
    )
    line1, line2_text, line3, char_w = starts
    assert abs(line1 - line3) < 0.5, starts
    assert abs(line2_text - line1 - 2 * char_w) < 0.5, starts

    # A trailing operator, an open string: Enter adds a line. Shift+Enter always does.
    await page.keyboard.type("twice(20) +")
    await page.keyboard.press("Enter")
    await page.keyboard.type("2")
    assert await box.input_value() == "twice(20) +\n2"
    await page.keyboard.press("Enter")
    second = page.locator(".exec").nth(1)
    await second.locator(".badge[data-status=ok]").wait_for()
    assert (await second.locator(".line.value").inner_text()).split()[-1] == "42"
    await shot(page, "multiline-input")
    await page.keyboard.type("'unterminated")
    await page.keyboard.press("Enter")
    assert await box.input_value() == "'unterminated\n"
    await box.fill("1")
    await page.keyboard.press("Shift+Enter")
    assert await box.input_value() == "1\n"

    # Ctrl+Enter runs whatever is there: the server reports the syntax error.
    await box.fill("twice(")
    await page.keyboard.press("Control+Enter")
    third = page.locator(".exec").nth(2)
    await third.locator(".badge[data-status=error]").wait_for()
    assert "SyntaxError" in await third.locator(".line.exception").inner_text()


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


CONTRAST = """(el) => {
    const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    let bg = el;
    while (bg && (getComputedStyle(bg).backgroundColor === 'rgba(0, 0, 0, 0)')) bg = bg.parentElement;
    const fg = lum(rgb(getComputedStyle(el).color));
    const back = lum(rgb(bg ? getComputedStyle(bg).backgroundColor : 'rgb(255,255,255)'));
    return (Math.max(fg, back) + 0.05) / (Math.min(fg, back) + 0.05);
}"""


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
