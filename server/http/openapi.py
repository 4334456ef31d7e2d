"""OpenAPI 3.1 document generated from the route table and the pydantic schemas.

It is the exact contract: every route and method, every parameter with the values the server
accepts, request bodies as strict as the decoder (unknown fields refused, no NUL anywhere, no
integer JavaScript cannot hold), and every status a route can answer. A bounded schemathesis
run in the test suite holds the server to it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from server import __version__
from server.core.params import JS_SAFE_INT
from server.core.schemas import ErrorOut, ExecutionOut
from server.errors import status_by_code

_STATUS = status_by_code()
_REF = "#/components/schemas/{model}"
NO_NUL = "^[^\\x00]*$"
# Any JSON value a request may carry in a free-form field (args, config): what check_json_value
# lets through (nesting depth aside, which a schema cannot bound).
JSON_VALUE = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "integer", "minimum": -JS_SAFE_INT, "maximum": JS_SAFE_INT},
        {"type": "number", "not": {"type": "integer"}},  # integral values are integers
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": _REF.format(model="JsonValue")}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": _REF.format(model="JsonValue")},
        },
    ]
}
# What makes a GET a WebSocket handshake (RFC 6455).
_UPGRADE_HEADERS = [
    {
        "name": "Upgrade",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": ["websocket"]},
    },
    {
        "name": "Connection",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": ["Upgrade"]},
    },
    {
        "name": "Sec-WebSocket-Version",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": ["13"]},
    },
    {
        "name": "Sec-WebSocket-Key",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"},
    },
]
# Every route may answer these: a missing token, a foreign Host or Origin, a failing store.
_EVERY_ROUTE = ("UNAUTHORIZED", "FORBIDDEN", "INTERNAL")
_BODY_ROUTE = ("INVALID_REQUEST", "VALIDATION_ERROR", "PAYLOAD_TOO_LARGE")


def _schema(tp: Any, components: dict[str, Any], *, request: bool = False) -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template=_REF, by_alias=True)
    defs = schema.pop("$defs", {})
    for name, sub in defs.items():
        components.setdefault(name, _strict(sub) if request else sub)
    if request:
        schema = _strict(schema)
    title = schema.get("title")
    if schema.get("type") == "object" and title:
        components.setdefault(title, schema)
        return {"$ref": _REF.format(model=title)}
    return schema


def _strict(schema: Any) -> Any:
    """A request schema as strict as the decoder: no NUL in text, free-form values bounded."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.get("type") == "string" and not {"pattern", "format", "enum", "const"} & out.keys():
        out["pattern"] = NO_NUL
    if out.get("type") == "object":
        out.setdefault("propertyNames", {"pattern": NO_NUL})
        if out.get("additionalProperties") is True:
            out["additionalProperties"] = {"$ref": _REF.format(model="JsonValue")}
        required = set(out.get("required", ()))
        for name, prop in out.get("properties", {}).items():
            if name not in required and not _nullable(prop):
                # The decoder reads null in an optional field as "use the default".
                out["properties"][name] = {"anyOf": [prop, {"type": "null"}]}
    return out


def _nullable(schema: dict[str, Any]) -> bool:
    return any(s.get("type") == "null" for s in schema.get("anyOf", ()))


def _parameters(route: Any) -> list[dict[str, Any]]:
    params = []
    for name in re.findall(r"{(\w+)}", route.path):
        schema: dict[str, Any] = {"type": "string"}
        if name.endswith("_id"):
            schema["format"] = "uuid"
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    for q in route.query:
        params.append({"name": q.name, "in": "query", "required": q.required, "schema": q.schema})
    return params


def _errors(route: Any) -> list[str]:
    codes = list(route.errors)
    if route.body is not None:
        codes += [c for c in _BODY_ROUTE if c not in codes]
    if "{" in route.path and "VALIDATION_ERROR" not in codes:
        codes.append("VALIDATION_ERROR")  # a malformed id in the path
    return codes + [c for c in _EVERY_ROUTE if c not in codes]


def _operation(route: Any, components: dict[str, Any], error_ref: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "operationId": route.handler.__name__, "responses": {}}
    params = _parameters(route)
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(route.body, components, request=True)}},
        }
    ok: dict[str, Any] = {"description": "success"}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": _schema(route.response, components)}}
    op["responses"][str(route.status)] = ok
    if route.status == 201 and route.path.startswith("/api/v1/executions/"):
        running = _schema(ExecutionOut, components)
        op["responses"]["202"] = {
            "description": "accepted (wait=false): the running execution",
            "content": {"application/json": {"schema": running}},
        }
    if route.path == "/api/v1/health":
        op["responses"]["503"] = ok  # {"status": "unavailable"}: the store does not answer
    for code in _errors(route):
        status = str(_STATUS[code])
        entry = op["responses"].setdefault(
            status,
            {"description": "", "content": {"application/json": {"schema": error_ref}}},
        )
        entry["description"] = ", ".join(filter(None, [entry["description"], code]))
    return op


def build_openapi(routes: Any, *, extra: Any = ()) -> dict[str, Any]:
    components: dict[str, Any] = {"JsonValue": JSON_VALUE}
    paths: dict[str, Any] = {}
    error_ref = _schema(ErrorOut, components)
    error_content = {"application/json": {"schema": error_ref}}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components, error_ref)
    for path, method, summary in extra:
        paths.setdefault(path, {})[method.lower()] = {
            "summary": summary,
            "parameters": _UPGRADE_HEADERS,
            "responses": {
                "101": {"description": "WebSocket upgrade"},
                "400": {"description": "INVALID_REQUEST: not a WebSocket upgrade", "content": error_content},
                "401": {"description": "UNAUTHORIZED", "content": error_content},
                "403": {"description": "FORBIDDEN", "content": error_content},
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vm-system",
            "version": __version__,
            "description": "Long-lived JavaScript sessions on QuickJS with live event streams.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }
