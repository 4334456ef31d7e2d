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
from server.core.params import is_uuid
from server.http.middleware import API_PREFIX

ROOT = Path(server.__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Where a "not found" page for each kind of id sends the user back to.
_BACK = {
    "template": ("/templates", "All templates"),
    "session": ("/sessions", "All sessions"),
    "execution": ("/sessions", "All sessions"),
}


def _not_found(
    request: web.Request,
    *,
    heading: str,
    message: str,
    back: tuple[str, str],
    nav: str = "",
    value: str | None = None,
) -> web.StreamResponse:
    """The site's 404 page: what was not found, and a way back."""
    context: dict[str, Any] = {
        "title": heading,
        "nav": nav,
        "version": __version__,
        "heading": heading,
        "message": message,
        "value": value,
        "back_href": back[0],
        "back_label": back[1],
    }
    return aiohttp_jinja2.render_template("not_found.html", request, context, status=404)


def _page(template: str, title: str, nav: str, *ids: str) -> PageHandler:
    """A handler rendering ``template`` with the path parameters ``ids`` as context.

    Every id is a UUID: a malformed one cannot name anything, so it gets the 404 page at once
    instead of a page of forms for nothing. (A well-formed id the server does not know is
    found out by the page's script, from the API's own 404.)
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        for name in ids:
            value = request.match_info[name]
            if not is_uuid(value):
                kind = name.removesuffix("_id")
                return _not_found(
                    request,
                    heading=f"{kind.capitalize()} not found",
                    message=f"There is no {kind} with the id below: it is not a valid id (ids are UUIDs).",
                    value=value,
                    back=_BACK[kind],
                    nav=nav,
                )
        context: dict[str, Any] = {
            "title": title,
            "nav": nav,
            "version": __version__,
            **{name: request.match_info[name] for name in ids},
        }
        return aiohttp_jinja2.render_template(template, request, context)

    return handler


@web.middleware
async def _html_not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown browser addresses get the site's 404 page (the API keeps its JSON 404)."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        path = request.path
        if (
            path.startswith(API_PREFIX)
            or path.startswith("/static/")
            or request.method not in ("GET", "HEAD")
        ):
            raise
        return _not_found(
            request,
            heading="Page not found",
            message="There is no page at this address.",
            value=path,
            back=("/sessions", "Sessions"),
        )


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
    # Innermost, so the shared middleware still sees (and logs) the 404 it returns.
    app.middlewares.append(_html_not_found)
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
