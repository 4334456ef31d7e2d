"""The browser UI: page shells rendered from templates/, plain ES modules and CSS from static/.

Every page is a thin shell carrying the ids it needs; the JavaScript loads the data through the
public REST and WebSocket API, so the UI sees exactly what any other client sees (and the same
errors, in the same envelope).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

import server
from server import __version__
from server.config import Settings

ROOT = Path(server.__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _page(template: str, title: str, nav: str, *ids: str) -> PageHandler:
    """A handler rendering ``template`` with the path parameters ``ids`` as context."""

    async def handler(request: web.Request) -> web.StreamResponse:
        context: dict[str, Any] = {
            "title": title,
            "nav": nav,
            "version": __version__,
            **{name: request.match_info[name] for name in ids},
        }
        return aiohttp_jinja2.render_template(template, request, context)

    return handler


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/sessions" + (f"?{request.query_string}" if request.query_string else ""))


async def _revalidate_static(request: web.Request, response: web.StreamResponse) -> None:
    # ES modules import each other without a version tag, so make the browser revalidate
    # (cheap: aiohttp answers 304 from the ETag) instead of running a stale mix after an upgrade.
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"


def setup(app: web.Application, settings: Settings) -> None:
    """Register the page routes, the static files and the template environment."""
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)))
    app.router.add_static("/static", STATIC_DIR, name="static", append_version=False)
    app.on_response_prepare.append(_revalidate_static)
    app.router.add_get("/", _home)
    app.router.add_get("/templates", _page("templates.html", "Templates", "templates"))
    app.router.add_get(
        "/templates/{template_id}",
        _page("template_detail.html", "Template", "templates", "template_id"),
    )
    app.router.add_get("/sessions", _page("sessions.html", "Sessions", "sessions"))
    app.router.add_get("/sessions/{session_id}", _page("repl.html", "Session", "sessions", "session_id"))
    app.router.add_get(
        "/sessions/{session_id}/history",
        _page("history.html", "History", "sessions", "session_id"),
    )
    app.router.add_get(
        "/executions/{execution_id}",
        _page("execution.html", "Execution", "sessions", "execution_id"),
    )
