"""The REST route table: every path, its handler, its body and answers, its errors and, in a
cluster, how it finds the node that answers it. ``add_routes`` mounts it; OpenAPI is built from it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from server.core import schemas as s
from server.core.executions import MAX_EVENTS_PAGE, MAX_EXECUTIONS_PAGE
from server.core.params import MAX_CURSOR
from server.core.sessions import SESSION_STATUSES
from server.http import rest
from server.http.forward import forwarding
from server.http.keys import ALLOW_BY_PATH
from server.http.middleware import json_response

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
    Route("GET", "/api/v1/health", rest.health, "Store reachability", response=s.HealthOut),
    Route(
        "GET",
        "/api/v1/runtime/summary",
        rest.runtime_summary,
        "Live sessions and executions",
        response=s.RuntimeSummary,
    ),
    Route("GET", "/api/v1/nodes", rest.list_nodes, "The nodes of the cluster", response=list[s.NodeOut]),
    Route("GET", "/api/v1/modules", rest.list_modules, "Native-module catalog", response=list[s.ModuleOut]),
    Route("GET", "/api/v1/libraries", rest.list_libraries, "Library catalog", response=list[s.LibraryOut]),
    Route(
        "GET",
        "/api/v1/templates",
        rest.list_templates,
        "List templates, newest first",
        response=list[s.TemplateOut],
    ),
    Route(
        "POST",
        "/api/v1/templates",
        rest.create_template,
        "Create a template",
        body=s.TemplateCreate,
        response=s.TemplateOut,
        status=201,
        errors=(*_BODY, "CONFLICT", "ENGINE_UNSUPPORTED"),
    ),
    Route(
        "GET",
        T,
        rest.get_template,
        "Template with settings, capabilities, startup files",
        response=s.TemplateDetail,
        errors=_TPL,
    ),
    Route(
        "PATCH",
        T,
        rest.patch_template,
        "Edit name and settings (merged key by key)",
        body=s.TemplatePatch,
        response=s.TemplateDetail,
        errors=(*_TPL, *_BODY, "CONFLICT"),
    ),
    Route(
        "DELETE",
        T,
        rest.delete_template,
        "Delete a template (its sessions keep running)",
        response=s.StatusOut,
        errors=_TPL,
    ),
    Route(
        "GET",
        f"{T}/capabilities",
        rest.list_capabilities,
        "List capabilities",
        response=list[s.CapabilityOut],
        errors=_TPL,
    ),
    Route(
        "POST",
        f"{T}/capabilities",
        rest.add_capability,
        "Add a capability",
        body=s.CapabilityCreate,
        response=s.CapabilityOut,
        status=201,
        errors=(*_TPL, *_BODY, "CONFLICT"),
    ),
    Route(
        "DELETE",
        f"{T}/capabilities/{{capability_id}}",
        rest.delete_capability,
        "Delete a capability",
        response=s.StatusOut,
        errors=(*_TPL, "NOT_FOUND"),
    ),
    Route(
        "GET",
        f"{T}/startup-files",
        rest.list_startup_files,
        "List startup files in run order",
        response=list[s.StartupFileOut],
        errors=_TPL,
    ),
    Route(
        "POST",
        f"{T}/startup-files",
        rest.add_startup_file,
        "Add a startup file",
        body=s.StartupFileCreate,
        response=s.StartupFileOut,
        status=201,
        errors=(*_TPL, *_BODY, "CONFLICT", "INVALID_PATH", "STARTUP_MODE_UNSUPPORTED"),
    ),
    Route(
        "DELETE",
        f"{T}/startup-files/{{startup_file_id}}",
        rest.delete_startup_file,
        "Delete a startup file",
        response=s.StatusOut,
        errors=(*_TPL, "NOT_FOUND"),
    ),
    Route(
        "GET",
        f"{T}/modules",
        rest.list_template_modules,
        "Enabled native modules",
        response=list[str],
        errors=_TPL,
    ),
    Route(
        "POST",
        f"{T}/modules",
        rest.add_template_module,
        "Enable a native module",
        body=s.NameBody,
        response=s.TemplateNameOut,
        status=201,
        errors=(*_TPL, *_BODY, "MODULE_NOT_ALLOWED"),
    ),
    Route(
        "DELETE",
        f"{T}/modules/{{name}}",
        rest.remove_template_module,
        "Disable a native module",
        response=s.StatusOut,
        errors=_TPL,
    ),
    Route(
        "GET",
        f"{T}/libraries",
        rest.list_template_libraries,
        "Configured libraries",
        response=list[str],
        errors=_TPL,
    ),
    Route(
        "POST",
        f"{T}/libraries",
        rest.add_template_library,
        "Add a library",
        body=s.NameBody,
        response=s.TemplateNameOut,
        status=201,
        errors=(*_TPL, *_BODY, "LIBRARY_NOT_ALLOWED"),
    ),
    Route(
        "DELETE",
        f"{T}/libraries/{{name}}",
        rest.remove_template_library,
        "Remove a library",
        response=s.StatusOut,
        errors=_TPL,
    ),
    Route(
        "GET",
        "/api/v1/sessions",
        rest.list_sessions,
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
        rest.create_session,
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
        rest.get_session,
        "Get a session",
        response=s.SessionOut,
        errors=("VALIDATION_ERROR", "SESSION_NOT_FOUND"),
    ),
    Route(
        "POST",
        "/api/v1/sessions/{session_id}/close",
        rest.close_session,
        "Close a session (idempotent)",
        response=s.SessionOut,
        errors=("VALIDATION_ERROR", "SESSION_NOT_FOUND", "NODE_UNAVAILABLE"),
        forward="close",
    ),
    Route(
        "POST",
        "/api/v1/sessions/{session_id}/fork",
        rest.fork_session,
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
        rest.complete_session,
        "Completions for the word at the cursor (never runs user code)",
        body=s.CompleteRequest,
        response=s.CompletionsOut,
        errors=(*_BODY, "SESSION_NOT_FOUND", "SESSION_NOT_READY", "NODE_UNAVAILABLE"),
        forward="session",
    ),
    Route(
        "DELETE",
        "/api/v1/sessions/{session_id}",
        rest.close_session,
        "Alias of close",
        response=s.SessionOut,
        errors=("VALIDATION_ERROR", "SESSION_NOT_FOUND", "NODE_UNAVAILABLE"),
        forward="close",
    ),
    Route(
        "GET",
        "/api/v1/executions",
        rest.list_executions,
        "Executions of a session, newest first",
        response=list[s.ExecutionOut],
        query=(
            Param("session_id", {"type": "string", "format": "uuid"}, required=True),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_EXECUTIONS_PAGE}),
            Param("before", {"type": "string", "format": "uuid"}),
        ),
        errors=("VALIDATION_ERROR", "SESSION_NOT_FOUND"),
    ),
    Route(
        "POST",
        "/api/v1/executions/repl",
        rest.execute_repl,
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
        rest.execute_run_file,
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
        rest.get_execution,
        "Get an execution",
        response=s.ExecutionOut,
        errors=("VALIDATION_ERROR", "EXECUTION_NOT_FOUND"),
    ),
    Route(
        "GET",
        "/api/v1/executions/{execution_id}/events",
        rest.list_events,
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
        rest.cancel_execution,
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
