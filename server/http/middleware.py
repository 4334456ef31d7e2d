"""HTTP middlewares: request ids, access log line, token auth, and the one error envelope."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from server import errors
from server.config import Settings
from server.core.params import is_uuid, printable
from server.http.access import API_PREFIX, check_request, mask_token
from server.http.keys import ALLOW_BY_PATH, FORWARDED_BY, MAX_BODY
from server.logs import ACCESS_LOGGER

log = logging.getLogger("vm_system.http")
access_log = logging.getLogger(ACCESS_LOGGER)  # one line per request, written in batches

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)


def json_response(data: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError:
        # Only text that is not valid Unicode (a lone surrogate echoed from a request) gets
        # here: answer with U+FFFD in its place rather than fail the response.
        body = orjson.dumps(_replace_surrogates(data))
    return web.Response(
        body=body,
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_surrogates(v) for v in value]
    return value


def error_response(exc: errors.DomainError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(exc.envelope(), status=exc.status, headers=headers)


def make_middlewares(settings: Settings) -> list[Callable[..., Awaitable[web.StreamResponse]]]:
    @web.middleware
    async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = _forwarded_request_id(request) or str(uuid.uuid4())
        request[REQUEST_ID] = request_id
        started = time.perf_counter()
        is_api = request.path.startswith(API_PREFIX)
        response: web.StreamResponse
        try:
            check_request(request, settings)
            response = await handler(request)
        except errors.DomainError as exc:
            response = error_response(exc)
        except RequestPayloadError as exc:
            response = _unreadable_body(exc, request)
        except web.HTTPException as exc:
            if not is_api and exc.status < 500:  # the UI's redirects and HTML pages
                _log_request(request, exc.status, started, request_id)
                raise
            response = _http_exception(exc, request)
        except Exception:  # noqa: BLE001 - logged with the request id, never leaked
            log.exception("unhandled error [request_id=%s] %s %s", request_id, request.method, request.path)
            response = error_response(
                errors.Internal(f"internal error; quote request id {request_id} when reporting it")
            )
        if is_api and not response.prepared:
            response.headers["X-Request-Id"] = request_id
        _log_request(request, response.status, started, request_id)
        return response

    return [request_context]


def _forwarded_request_id(request: web.Request) -> str | None:
    """A request another node forwarded keeps its id (one id, one request, across nodes)."""
    if FORWARDED_BY not in request.headers:
        return None
    given = request.headers.get("X-Request-Id", "")
    return str(uuid.UUID(given)) if is_uuid(given) else None


def _log_request(request: web.Request, status: int, started: float, request_id: str) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "%s %s %s %.1fms request_id=%s",
        request.method,
        mask_token(request.path_qs),
        status,
        (time.perf_counter() - started) * 1000,
        request_id,
    )


def _unreadable_body(exc: RequestPayloadError, request: web.Request) -> web.Response:
    """A body aiohttp could not decode (a bad ``Content-Encoding``, broken chunking)."""
    reason = getattr(exc.__cause__, "message", None) or str(exc)
    response = error_response(errors.InvalidRequest(f"request body could not be read: {reason}"))
    # The rest of the body cannot be trusted to end where it should: end the body here (so
    # aiohttp does not try to drain it) and close the connection after this answer.
    request.content.feed_eof()
    response.force_close()
    return response


def _http_exception(exc: web.HTTPException, request: web.Request) -> web.Response:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(request.app.get(ALLOW_BY_PATH, {}).get(request.path) or exc.allowed_methods)
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
