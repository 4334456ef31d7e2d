"""The browser UI: page shells rendered from templates/, plain ES modules and CSS from static/.

Every page is a thin shell carrying the ids it needs; the JavaScript loads the data through the
public REST and WebSocket API, so the UI sees exactly what any other client sees (and the same
errors, in the same envelope).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

import server
from server import __version__, errors
from server.config import Settings
from server.core.params import is_uuid, parse_uuid
from server.http.keys import SERVICES
from server.http.middleware import API_PREFIX
from server.services import Services


def _ui_dir(name: str) -> Path:
    """``static`` or ``templates``: package data in a wheel, the source tree's folder otherwise.

    The folders live at the top of the repository; the build copies them into the package
    (see setup.py), while an editable install or a checkout serves them where they are.
    """
    package = Path(str(importlib.resources.files(server)))
    for candidate in (package / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(
        f"the browser UI folder {name!r} is missing (looked in {package / name} and "
        f"{package.parent / name}); reinstall vm-system"
    )


TEMPLATES_DIR = _ui_dir("templates")
STATIC_DIR = _ui_dir("static")

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


# How a page finds out whether the thing its id names exists (each raises its NOT_FOUND error).
_LOOKUP: dict[str, Callable[[Services, str], Awaitable[Any]]] = {
    "template_id": lambda svc, value: svc.templates.require(parse_uuid(value, "template")),
    "session_id": lambda svc, value: svc.sessions.get(value),
    "execution_id": lambda svc, value: svc.executions.get(value),
}
_NOT_FOUND = (errors.TemplateNotFound, errors.SessionNotFound, errors.ExecutionNotFound)


def _page(template: str, title: str, nav: str, *ids: str) -> PageHandler:
    """A handler rendering ``template`` with the path parameters ``ids`` as context.

    An id that is malformed or names nothing gets the 404 page (HTTP 404) instead of a page of
    forms for nothing. (Something deleted while its page is open is found out by the page's
    script, from the API's own 404.)
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        for name in ids:
            value = request.match_info[name]
            kind = name.removesuffix("_id")
            reason = None
            if not is_uuid(value):
                reason = "it is not a valid id (ids are UUIDs)"
            else:
                try:
                    await _LOOKUP[name](request.app[SERVICES], value)
                except _NOT_FOUND:
                    reason = "it does not exist on this server"
            if reason is not None:
                return _not_found(
                    request,
                    heading=f"{kind.capitalize()} not found",
                    message=f"There is no {kind} with the id below: {reason}.",
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
