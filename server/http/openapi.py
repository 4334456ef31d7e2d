"""OpenAPI 3.1 document generated from the route table and the pydantic schemas."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from server import __version__
from server.core.schemas import ErrorOut
from server.errors import status_by_code

_STATUS = status_by_code()
_REF = "#/components/schemas/{model}"


def _schema(tp: Any, components: dict[str, Any]) -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template=_REF, by_alias=True)
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    title = schema.get("title")
    if schema.get("type") == "object" and title:
        components.setdefault(title, schema)
        return {"$ref": _REF.format(model=title)}
    return schema


def build_openapi(routes: Any, *, extra: Any = ()) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    error_ref = _schema(ErrorOut, components)
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {},
        }
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"{(\w+)}", route.path)
        ]
        params += [
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in route.query
        ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(route.body, components)}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if route.response is not None:
            ok["content"] = {"application/json": {"schema": _schema(route.response, components)}}
        op["responses"][str(route.status)] = ok
        if route.status == 201 and route.path.startswith("/api/v1/executions/"):
            op["responses"]["202"] = {"description": "accepted (wait=false): the running execution"}
        for code in route.errors:
            status = str(_STATUS[code])
            entry = op["responses"].setdefault(
                status,
                {"description": "", "content": {"application/json": {"schema": error_ref}}},
            )
            entry["description"] = ", ".join(filter(None, [entry["description"], code]))
        paths.setdefault(route.path, {})[route.method.lower()] = op
    for path, method, summary in extra:
        paths.setdefault(path, {})[method.lower()] = {
            "summary": summary,
            "responses": {"101": {"description": "WebSocket upgrade"}},
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
