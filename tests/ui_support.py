"""Shared pieces of the browser tests: Chromium, a real server per test, and what a user does.

tests/conftest.py loads this as a plugin; a UI test module marks itself
``pytest.mark.asyncio(loop_scope="module")``: one browser per module, and every test and
fixture on the module's loop. Pages are served with the Content-Security-Policy the server is
meant to send (``CSP``), unless the server sends its own, and a page that breaks the policy (or
throws) fails its test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
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
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# The policy of API.md §13 as the UI must live with it: no inline script of any kind.
CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"

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
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def ui_server_factory() -> AsyncIterator[Any]:
    """Start aiohttp test servers on the module's loop (the shared browser lives there too)."""
    servers: list[TestServer] = []

    async def go(app: web.Application, *, port: int | None = None) -> TestServer:
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        servers.append(server)
        return server

    yield go
    while servers:
        await servers.pop().close()


class PageProblems:
    """What went wrong in a page that no assertion looks at: uncaught errors, CSP violations."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.errors.append(msg.text)


async def new_page(browser: Any, **context_options: Any) -> tuple[Any, Any, PageProblems]:
    options = {"viewport": {"width": 1280, "height": 860}, **context_options}
    context = await browser.new_context(**options)
    pg = await context.new_page()
    pg.set_default_timeout(15_000)
    return context, pg, PageProblems(pg)


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any) -> AsyncIterator[Any]:
    context, pg, problems = await new_page(browser)
    yield pg
    await context.close()
    assert problems.errors == [], f"uncaught errors or CSP violations in the page: {problems.errors}"


async def _csp(request: web.Request, response: web.StreamResponse) -> None:
    if response.content_type == "text/html" and "Content-Security-Policy" not in response.headers:
        response.headers["Content-Security-Policy"] = CSP


class Ui:
    """A running server plus REST shortcuts for the state a test does not build through the UI."""

    def __init__(self, factory: Any, settings: Settings, worktree: Path) -> None:
        self.factory = factory
        self.settings = settings
        self.worktree = worktree
        self.server: Any = None

    async def start(self, port: int | None = None) -> None:
        app = create_app(self.settings)
        app.on_response_prepare.append(_csp)
        self.server = await self.factory(app, port=port)

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
async def ui(ui_server_factory: Any, settings: Settings, worktree: Path) -> Ui:
    u = Ui(ui_server_factory, settings, worktree)
    await u.start()
    return u


@pytest_asyncio.fixture(loop_scope="module")
async def ui_with_token(ui_server_factory: Any, settings: Settings, worktree: Path) -> Ui:
    u = Ui(ui_server_factory, dataclasses.replace(settings, token="s3cret"), worktree)
    await u.start()
    return u


# ------------------------------------------------------------------------------- the REPL


async def open_repl(page: Any, ui: Ui, sid: str) -> None:
    await page.goto(ui.url(f"/sessions/{sid}"))
    await page.locator("#conn-state[data-state=live]").wait_for()


async def run(page: Any, code: str, *, wait: bool = True) -> Any:
    """Type ``code`` into the REPL, press Enter, return the locator of its execution block.

    The new block is the one whose id was not on the page before (a running background block
    stays at the bottom, so the newest block is not always the last).
    """
    before = await page.eval_on_selector_all(
        ".exec[data-execution-id]", "els => els.map(e => e.dataset.executionId)"
    )
    box = page.locator("#repl-input")
    await box.fill(code)
    await box.press("Enter")
    handle = await page.wait_for_function(
        """(before) => [...document.querySelectorAll('.exec[data-execution-id]')]
            .map((e) => e.dataset.executionId).find((id) => !before.includes(id) && document
            .querySelector(`.exec[data-execution-id="${id}"] .exec-input`).textContent !== '' &&
            document.querySelector(`.exec[data-execution-id="${id}"]`).dataset.kind !== 'background')""",
        arg=before,
    )
    block = page.locator(f'.exec[data-execution-id="{await handle.json_value()}"]')
    await block.wait_for()
    if wait:
        await block.locator(".exec-head .badge:not([data-status=running])").wait_for()
    return block


async def replace_input(page: Any, text: str) -> None:
    """Select all in the editor and paste ``text`` over it, as a user would."""
    await page.locator("#repl-input").focus()
    await page.keyboard.press("Control+a")
    await page.keyboard.press("Backspace")
    await page.keyboard.insert_text(text)


async def editor_text(page: Any) -> str:
    """What the REPL's editor holds (CodeMirror's document, not the DOM's rendering of it)."""
    return str(
        await page.evaluate(
            "async () => { const { EditorView } = await import('/static/vendor/codemirror.js');"
            " const dom = document.querySelector('#repl-editor .cm-editor');"
            " return EditorView.findFromDOM(dom).state.doc.toString(); }"
        )
    )


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


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def shot(page: Any, name: str, **options: Any) -> None:
    """A screenshot for a person to look at, kept only when $UI_SHOTS_DIR says where."""
    where = os.environ.get("UI_SHOTS_DIR")
    if where:
        await page.screenshot(path=str(Path(where) / f"{name}.png"), **options)


# The WCAG contrast ratio of an element's text against the first opaque background behind it.
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
