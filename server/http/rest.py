"""REST handlers: parse, call one service method, serialise. The route table feeds OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from server import __version__
from server.core import schemas as s
from server.core.params import parse_uuid
from server.events import events_array
from server.http.decode import decode_body
from server.http.keys import SERVICES
from server.http.middleware import json_response
from server.pipeline.executions import ExecOutcome
from server.runtime import libraries, modules
from server.services import Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    return json_response(
        await _svc(request).executions.list(q.get("session_id"), q.get("limit"), q.get("before"))
    )


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
