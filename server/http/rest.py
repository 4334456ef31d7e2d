"""REST handlers: parse, call one service method, serialise. The route table feeds OpenAPI."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from server import __version__
from server.core import schemas as s
from server.core.executions import MAX_EVENTS_PAGE, MAX_EXECUTIONS_PAGE
from server.core.params import MAX_CURSOR, parse_uuid
from server.core.sessions import SESSION_STATUSES
from server.events import events_array
from server.http.decode import decode_body
from server.http.forward import forwarding
from server.http.keys import ALLOW_BY_PATH, SERVICES
from server.http.middleware import json_response
from server.pipeline.executions import ExecOutcome
from server.runtime import libraries, modules
from server.services import Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A query parameter, with the JSON schema of the values the service accepts."""

    name: str
    schema: dict[str, Any]
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    errors: tuple[str, ...] = ()
    query: tuple[Param, ...] = ()
    # In a cluster, where the request is answered: None here; else a rule of http/forward.py
    # ("session", "close", "execution", "body", "placement") finds the node that holds it.
    forward: str | None = None


def _svc(request: web.Request) -> Services:
    return request.app[SERVICES]


async def _body(request: web.Request, model: type[Any], **details: Any) -> Any:
    return decode_body(await request.read(), model, **details)


def _tid(request: web.Request) -> str:
    return parse_uuid(request.match_info["template_id"], "template")


# ---------------------------------------------------------------- ops & catalogs


async def health(request: web.Request) -> web.Response:
    ok = await _svc(request).store.ping()
    return json_response({"status": "ok" if ok else "unavailable"}, status=200 if ok else 503)


async def runtime_summary(request: web.Request) -> web.Response:
    summary = _svc(request).sessions.summary()
    return json_response({**summary, "engine": "quickjs", "version": __version__})


async def list_nodes(request: web.Request) -> web.Response:
    return json_response(await _svc(request).nodes.list())


async def list_modules(request: web.Request) -> web.Response:
    return json_response(modules.catalog_json())


async def list_libraries(request: web.Request) -> web.Response:
    return json_response(libraries.catalog_json(_svc(request).settings.cache_dir))


# ---------------------------------------------------------------- templates


async def list_templates(request: web.Request) -> web.Response:
    return json_response(await _svc(request).templates.list())


async def create_template(request: web.Request) -> web.Response:
    body = await _body(request, s.TemplateCreate)
    return json_response(await _svc(request).templates.create(body), status=201)


async def get_template(request: web.Request) -> web.Response:
    return json_response(await _svc(request).templates.detail(_tid(request)))


async def patch_template(request: web.Request) -> web.Response:
    tid = _tid(request)
    body = await _body(request, s.TemplatePatch, template_id=tid)
    return json_response(await _svc(request).templates.patch(tid, body))


async def delete_template(request: web.Request) -> web.Response:
    return json_response(await _svc(request).templates.delete(_tid(request)))


async def list_capabilities(request: web.Request) -> web.Response:
    return json_response(await _svc(request).templates.list_capabilities(_tid(request)))


async def add_capability(request: web.Request) -> web.Response:
    tid = _tid(request)
    body = await _body(request, s.CapabilityCreate, template_id=tid)
    return json_response(await _svc(request).templates.add_capability(tid, body), status=201)


async def delete_capability(request: web.Request) -> web.Response:
    tid = _tid(request)
    cid = parse_uuid(request.match_info["capability_id"], "capability")
    return json_response(await _svc(request).templates.delete_capability(tid, cid))


async def list_startup_files(request: web.Request) -> web.Response:
    return json_response(await _svc(request).templates.list_startup_files(_tid(request)))


async def add_startup_file(request: web.Request) -> web.Response:
    tid = _tid(request)
    body = await _body(request, s.StartupFileCreate, template_id=tid)
    return json_response(await _svc(request).templates.add_startup_file(tid, body), status=201)


async def delete_startup_file(request: web.Request) -> web.Response:
    tid = _tid(request)
    fid = parse_uuid(request.match_info["startup_file_id"], "startup_file")
    return json_response(await _svc(request).templates.delete_startup_file(tid, fid))


async def list_template_modules(request: web.Request) -> web.Response:
    return json_response(await _svc(request).templates.list_modules(_tid(request)))


async def add_template_module(request: web.Request) -> web.Response:
    tid = _tid(request)
    body = await _body(request, s.NameBody, template_id=tid)
    return json_response(await _svc(request).templates.add_module(tid, body.name), status=201)


async def remove_template_module(request: web.Request) -> web.Response:
    tid = _tid(request)
    return json_response(await _svc(request).templates.remove_module(tid, request.match_info["name"]))


async def list_template_libraries(request: web.Request) -> web.Response:
    return json_response(await _svc(request).templates.list_libraries(_tid(request)))


async def add_template_library(request: web.Request) -> web.Response:
    tid = _tid(request)
    body = await _body(request, s.NameBody, template_id=tid)
    return json_response(await _svc(request).templates.add_library(tid, body.name), status=201)


async def remove_template_library(request: web.Request) -> web.Response:
    tid = _tid(request)
    return json_response(await _svc(request).templates.remove_library(tid, request.match_info["name"]))


# ---------------------------------------------------------------- sessions


async def list_sessions(request: web.Request) -> web.Response:
    q = request.query
    return json_response(
        await _svc(request).sessions.list(status=q.get("status"), template_id=q.get("template_id"))
    )


async def create_session(request: web.Request) -> web.Response:
    body = await _body(request, s.SessionCreate)
    return json_response(await _svc(request).sessions.create(body), status=201)


async def get_session(request: web.Request) -> web.Response:
    return json_response(await _svc(request).sessions.get(request.match_info["session_id"]))


async def close_session(request: web.Request) -> web.Response:
    return json_response(await _svc(request).sessions.close(request.match_info["session_id"]))


async def fork_session(request: web.Request) -> web.Response:
    raw = await request.read()
    body = decode_body(raw, s.SessionFork) if raw.strip() else s.SessionFork()  # the body is optional
    return json_response(
        await _svc(request).sessions.fork(request.match_info["session_id"], body), status=201
    )


async def complete_session(request: web.Request) -> web.Response:
    body = await _body(request, s.CompleteRequest)
    found = await _svc(request).sessions.complete(request.match_info["session_id"], body.input, body.cursor)
    return json_response(found)


# ---------------------------------------------------------------- executions


def _execution_response(outcome: ExecOutcome) -> web.Response:
    if outcome.events is None:
        return json_response(outcome.execution, status=202)
    body = {**outcome.execution, "events": events_array(outcome.events)}
    return json_response(body, status=201)


async def list_executions(request: web.Request) -> web.Response:
    q = request.query
    return json_response(await _svc(request).executions.list(q.get("session_id"), q.get("limit")))


async def execute_repl(request: web.Request) -> web.Response:
    body = await _body(request, s.ReplRequest)
    return _execution_response(await _svc(request).executions.repl(body))


async def execute_run_file(request: web.Request) -> web.Response:
    body = await _body(request, s.RunFileRequest)
    return _execution_response(await _svc(request).executions.run_file(body))


async def get_execution(request: web.Request) -> web.Response:
    return json_response(await _svc(request).executions.get(request.match_info["execution_id"]))


async def list_events(request: web.Request) -> web.Response:
    q = request.query
    return json_response(
        await _svc(request).executions.events(
            request.match_info["execution_id"], q.get("after_seq"), q.get("limit")
        )
    )


async def cancel_execution(request: web.Request) -> web.Response:
    return json_response(await _svc(request).executions.cancel(request.match_info["execution_id"]))


async def openapi(request: web.Request) -> web.Response:
    from server.http.openapi import build_openapi

    return json_response(build_openapi(ROUTES, extra=request.app.get(EXTRA_ROUTES, ())))


EXTRA_ROUTES = web.AppKey("extra_routes", tuple)

T = "/api/v1/templates/{template_id}"
_TPL = ("VALIDATION_ERROR", "TEMPLATE_NOT_FOUND")
_BODY = ("INVALID_REQUEST", "VALIDATION_ERROR", "PAYLOAD_TOO_LARGE")
_EXEC = (
    *_BODY,
    "SESSION_NOT_FOUND",
    "SESSION_NOT_READY",
    "SESSION_BUSY",
    "OUTPUT_LIMIT_EXCEEDED",
    "INTERNAL",
    "NODE_UNAVAILABLE",
)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/health", health, "Store reachability", response=s.HealthOut),
    Route(
        "GET",
        "/api/v1/runtime/summary",
        runtime_summary,
        "Live sessions and executions",
        response=s.RuntimeSummary,
    ),
    Route("GET", "/api/v1/nodes", list_nodes, "The nodes of the cluster", response=list[s.NodeOut]),
    Route("GET", "/api/v1/modules", list_modules, "Native-module catalog", response=list[s.ModuleOut]),
    Route("GET", "/api/v1/libraries", list_libraries, "Library catalog", response=list[s.LibraryOut]),
    Route(
        "GET",
        "/api/v1/templates",
        list_templates,
        "List templates, newest first",
        response=list[s.TemplateOut],
    ),
    Route(
        "POST",
        "/api/v1/templates",
        create_template,
        "Create a template",
        body=s.TemplateCreate,
        response=s.TemplateOut,
        status=201,
        errors=(*_BODY, "CONFLICT", "ENGINE_UNSUPPORTED"),
    ),
    Route(
        "GET",
        T,
        get_template,
        "Template with settings, capabilities, startup files",
        response=s.TemplateDetail,
        errors=_TPL,
    ),
    Route(
        "PATCH",
        T,
        patch_template,
        "Edit name and settings (merged key by key)",
        body=s.TemplatePatch,
        response=s.TemplateDetail,
        errors=(*_TPL, *_BODY, "CONFLICT"),
    ),
    Route(
        "DELETE",
        T,
        delete_template,
        "Delete a template (its sessions keep running)",
        response=s.StatusOut,
        errors=_TPL,
    ),
    Route(
        "GET",
        f"{T}/capabilities",
        list_capabilities,
        "List capabilities",
        response=list[s.CapabilityOut],
        errors=_TPL,
    ),
    Route(
        "POST",
        f"{T}/capabilities",
        add_capability,
        "Add a capability",
        body=s.CapabilityCreate,
        response=s.CapabilityOut,
        status=201,
        errors=(*_TPL, *_BODY, "CONFLICT"),
    ),
    Route(
        "DELETE",
        f"{T}/capabilities/{{capability_id}}",
        delete_capability,
        "Delete a capability",
        response=s.StatusOut,
        errors=(*_TPL, "NOT_FOUND"),
    ),
    Route(
        "GET",
        f"{T}/startup-files",
        list_startup_files,
        "List startup files in run order",
        response=list[s.StartupFileOut],
        errors=_TPL,
    ),
    Route(
        "POST",
        f"{T}/startup-files",
        add_startup_file,
        "Add a startup file",
        body=s.StartupFileCreate,
        response=s.StartupFileOut,
        status=201,
        errors=(*_TPL, *_BODY, "CONFLICT", "INVALID_PATH", "STARTUP_MODE_UNSUPPORTED"),
    ),
    Route(
        "DELETE",
        f"{T}/startup-files/{{startup_file_id}}",
        delete_startup_file,
        "Delete a startup file",
        response=s.StatusOut,
        errors=(*_TPL, "NOT_FOUND"),
    ),
    Route(
        "GET",
        f"{T}/modules",
        list_template_modules,
        "Enabled native modules",
        response=list[str],
        errors=_TPL,
    ),
    Route(
        "POST",
        f"{T}/modules",
        add_template_module,
        "Enable a native module",
        body=s.NameBody,
        response=s.TemplateNameOut,
        status=201,
        errors=(*_TPL, *_BODY, "MODULE_NOT_ALLOWED"),
    ),
    Route(
        "DELETE",
        f"{T}/modules/{{name}}",
        remove_template_module,
        "Disable a native module",
        response=s.StatusOut,
        errors=_TPL,
    ),
    Route(
        "GET",
        f"{T}/libraries",
        list_template_libraries,
        "Configured libraries",
        response=list[str],
        errors=_TPL,
    ),
    Route(
        "POST",
        f"{T}/libraries",
        add_template_library,
        "Add a library",
        body=s.NameBody,
        response=s.TemplateNameOut,
        status=201,
        errors=(*_TPL, *_BODY, "LIBRARY_NOT_ALLOWED"),
    ),
    Route(
        "DELETE",
        f"{T}/libraries/{{name}}",
        remove_template_library,
        "Remove a library",
        response=s.StatusOut,
        errors=_TPL,
    ),
    Route(
        "GET",
        "/api/v1/sessions",
        list_sessions,
        "List sessions, newest first",
        response=list[s.SessionOut],
        errors=("VALIDATION_ERROR",),
        query=(
            Param("status", {"type": "string", "enum": list(SESSION_STATUSES)}),
            Param("template_id", {"type": "string", "format": "uuid"}),
        ),
    ),
    Route(
        "POST",
        "/api/v1/sessions",
        create_session,
        "Create a session and run its start-up",
        body=s.SessionCreate,
        response=s.SessionOut,
        status=201,
        errors=(
            *_BODY,
            "TEMPLATE_NOT_FOUND",
            "INVALID_PATH",
            "FILE_NOT_FOUND",
            "STARTUP_FAILED",
            "LIBRARY_UNAVAILABLE",
            "TOO_MANY_SESSIONS",
            "NODE_UNAVAILABLE",
        ),
        forward="placement",
    ),
    Route(
        "GET",
        "/api/v1/sessions/{session_id}",
        get_session,
        "Get a session",
        response=s.SessionOut,
        errors=("VALIDATION_ERROR", "SESSION_NOT_FOUND"),
    ),
    Route(
        "POST",
        "/api/v1/sessions/{session_id}/close",
        close_session,
        "Close a session (idempotent)",
        response=s.SessionOut,
        errors=("VALIDATION_ERROR", "SESSION_NOT_FOUND", "NODE_UNAVAILABLE"),
        forward="close",
    ),
    Route(
        "POST",
        "/api/v1/sessions/{session_id}/fork",
        fork_session,
        "Fork a session: a new one with a copy of its state as of its checkpoint",
        body=s.SessionFork,
        response=s.SessionOut,
        status=201,
        errors=(
            *_BODY,
            "SESSION_NOT_FOUND",
            "SESSION_NOT_READY",
            "INVALID_PATH",
            "TOO_MANY_SESSIONS",
            "NODE_UNAVAILABLE",
        ),
        forward="session",
    ),
    Route(
        "POST",
        "/api/v1/sessions/{session_id}/complete",
        complete_session,
        "Completions for the word at the cursor (never runs user code)",
        body=s.CompleteRequest,
        response=s.CompletionsOut,
        errors=(*_BODY, "SESSION_NOT_FOUND", "SESSION_NOT_READY", "NODE_UNAVAILABLE"),
        forward="session",
    ),
    Route(
        "DELETE",
        "/api/v1/sessions/{session_id}",
        close_session,
        "Alias of close",
        response=s.SessionOut,
        errors=("VALIDATION_ERROR", "SESSION_NOT_FOUND", "NODE_UNAVAILABLE"),
        forward="close",
    ),
    Route(
        "GET",
        "/api/v1/executions",
        list_executions,
        "Executions of a session, newest first",
        response=list[s.ExecutionOut],
        query=(
            Param("session_id", {"type": "string", "format": "uuid"}, required=True),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_EXECUTIONS_PAGE}),
        ),
        errors=("VALIDATION_ERROR", "SESSION_NOT_FOUND"),
    ),
    Route(
        "POST",
        "/api/v1/executions/repl",
        execute_repl,
        "Run a REPL snippet",
        body=s.ReplRequest,
        response=s.ExecutionWithEvents,
        status=201,
        errors=_EXEC,
        forward="body",
    ),
    Route(
        "POST",
        "/api/v1/executions/run-file",
        execute_run_file,
        "Run a file from the worktree",
        body=s.RunFileRequest,
        response=s.ExecutionWithEvents,
        status=201,
        errors=(*_EXEC, "INVALID_PATH", "FILE_NOT_FOUND"),
        forward="body",
    ),
    Route(
        "GET",
        "/api/v1/executions/{execution_id}",
        get_execution,
        "Get an execution",
        response=s.ExecutionOut,
        errors=("VALIDATION_ERROR", "EXECUTION_NOT_FOUND"),
    ),
    Route(
        "GET",
        "/api/v1/executions/{execution_id}/events",
        list_events,
        "Events after a seq cursor, ascending",
        response=list[s.EventOut],
        query=(
            Param("after_seq", {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR}),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_PAGE}),
        ),
        errors=("VALIDATION_ERROR", "EXECUTION_NOT_FOUND"),
    ),
    Route(
        "POST",
        "/api/v1/executions/{execution_id}/cancel",
        cancel_execution,
        "Cancel a running execution",
        response=s.ExecutionOut,
        errors=("VALIDATION_ERROR", "EXECUTION_NOT_FOUND", "EXECUTION_NOT_RUNNING", "NODE_UNAVAILABLE"),
        forward="execution",
    ),
    Route("GET", "/api/v1/openapi.json", openapi, "This document", response=dict[str, Any]),
)


def _router_path(path: str) -> str:
    # aiohttp's default segment pattern excludes braces, but ids may come as "{uuid}".
    return re.sub(r"{(\w+)}", r"{\1:[^/]+}", path)


def add_routes(app: web.Application, *, cluster: bool = False) -> None:
    """The route table on ``app``; in a ``cluster`` session-bound routes forward to their node."""
    # A 405 on a literal path lists that path's own methods, as OpenAPI matches literal paths
    # before templated ones (GET /executions/repl reaches the {execution_id} route, and 400s).
    allow: dict[str, set[str]] = {}
    for route in ROUTES:
        if "{" not in route.path:
            allow.setdefault(route.path, set()).update(
                (route.method, "HEAD") if route.method == "GET" else (route.method,)
            )
    app[ALLOW_BY_PATH] = {path: frozenset(methods) for path, methods in allow.items()}
    for route in ROUTES:
        handler = route.handler
        if cluster and route.forward is not None:
            handler = forwarding(handler, route.forward)
        if route.method == "GET":
            app.router.add_get(_router_path(route.path), handler)  # HEAD too
        else:
            app.router.add_route(route.method, _router_path(route.path), handler)
