"""HTTP middlewares: request ids, access log line, token auth, and the one error envelope."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from server import errors
from server.http.keys import MAX_BODY

log = logging.getLogger("vm_system.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIX = "/api/v1"
REQUEST_ID = web.RequestKey("request_id", str)


def json_response(data: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def error_response(exc: errors.DomainError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(exc.envelope(), status=exc.status, headers=headers)


def make_middlewares(token: str | None) -> list[Callable[..., Awaitable[web.StreamResponse]]]:
    @web.middleware
    async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        request[REQUEST_ID] = request_id
        started = time.perf_counter()
        is_api = request.path.startswith(API_PREFIX)
        response: web.StreamResponse
        try:
            if is_api and token is not None and request.path != f"{API_PREFIX}/health":
                _check_token(request, token)
            response = await handler(request)
        except errors.DomainError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            if not is_api and exc.status < 500:
                raise
            response = _http_exception(exc, request)
        except Exception:  # noqa: BLE001 - logged with the request id, never leaked
            log.exception("unhandled error [request_id=%s] %s %s", request_id, request.method, request.path)
            response = error_response(
                errors.Internal(f"internal error; quote request id {request_id} when reporting it")
            )
        if is_api and not response.prepared:
            response.headers["X-Request-Id"] = request_id
        log.info(
            "%s %s %s %.1fms request_id=%s",
            request.method,
            request.path_qs,
            response.status,
            (time.perf_counter() - started) * 1000,
            request_id,
        )
        return response

    return [request_context]


def _check_token(request: web.Request, token: str) -> None:
    header = request.headers.get("Authorization", "")
    supplied = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    if not supplied or not hmac.compare_digest(supplied.encode(), token.encode()):
        raise errors.Unauthorized("missing or wrong API token; send 'Authorization: Bearer <token>'")


def _http_exception(exc: web.HTTPException, request: web.Request) -> web.Response:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        err: errors.DomainError = errors.MethodNotAllowed(
            f"method {request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}",
            allowed=allowed,
        )
        return error_response(err, headers={"Allow": ", ".join(allowed)})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(
            errors.PayloadTooLarge(f"request body is larger than the limit of {request.app[MAX_BODY]} bytes")
        )
    if isinstance(exc, web.HTTPNotFound):
        return error_response(errors.NotFound(f"no route for {request.method} {request.path}"))
    if exc.status >= 500:
        return error_response(errors.Internal(exc.reason or "internal error"))
    return error_response(errors.InvalidRequest(exc.reason or "bad request"))
