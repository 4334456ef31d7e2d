"""The HTTP connections themselves: a header deadline, a connection cap, and JSON framing errors.

aiohttp's ``RequestHandler`` is one connection. The subclass here closes a connection whose
request head does not arrive within ``header_timeout_s`` (slow-header attacks hold a file
descriptor each), refuses connections beyond ``max_connections`` at once with a 503 (the
connections already open, and ``/health`` on them, keep working), and answers the errors
aiohttp raises before any route runs (a bad request line, bad or oversized headers, bad
chunking) with the API's JSON envelope instead of plain text. ``run()`` serves an app with
them, as ``web.run_app`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from server import errors
from server.config import Settings

log = logging.getLogger("vm_system.http")

KEEPALIVE_S = 75.0  # aiohttp's run_app default for idle keep-alive connections
SHUTDOWN_S = 10.0


def raw_response(exc: errors.DomainError, *, reason: str | None = None) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response carrying the error envelope."""
    body = orjson.dumps(exc.envelope())
    phrase = reason or HTTPStatus(exc.status).phrase
    head = (
        f"HTTP/1.1 {exc.status} {phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-Id: {uuid.uuid4()}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHandler(RequestHandler):
    """One HTTP connection with a deadline on request heads and JSON framing errors."""

    __slots__ = ("_head_timer", "_header_timeout", "_head_bytes")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_timer()  # a connection that sends nothing at all is a held descriptor

    def data_received(self, data: bytes) -> None:
        # Between requests (waiting for the next head) a first byte starts the clock.
        if self._head_timer is None and self._waiter is not None and not self._upgraded:
            self._start_head_timer()
        if self._head_timer is not None:
            self._head_bytes += len(data)
        before = self._request_count
        super().data_received(data)
        if self._request_count != before or self._upgraded:
            self._stop_head_timer()  # a whole head arrived

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        self._head_bytes = 0
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._head_bytes:  # a client that started a request hears why it ends
            err = errors.RequestTimeout(
                f"the request headers did not arrive within {self._header_timeout:g} s"
            )
            transport.write(raw_response(err))
        self.force_close()
        transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The errors aiohttp answers itself, as the envelope (never a traceback)."""
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            err: errors.DomainError = errors.Internal("internal error")
        else:  # aiohttp's framing errors are all 400
            reason = getattr(exc, "message", None) or message or HTTPStatus(status).phrase
            reason = " ".join(str(reason).split())  # aiohttp's messages draw a caret on lines
            log.info("malformed HTTP request from %s: %s", request.remote, reason)
            err = errors.InvalidRequest(f"malformed HTTP request: {reason}")
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent: cannot send the error too")
        response = web.Response(
            body=orjson.dumps(err.envelope()),
            status=err.status,
            content_type="application/json",
            charset="utf-8",
            headers={"X-Request-Id": str(uuid.uuid4())},
        )
        response.force_close()
        return response


class _Refuse(asyncio.Protocol):
    """A connection past the cap: answered with a 503 and closed at once."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        err = errors.TooManyConnections(
            f"the server already has its maximum of {self.cap} open connections "
            "(--max-connections); try again later"
        )
        transport.write(raw_response(err))
        transport.close()


class GuardedServer(web.Server):
    """aiohttp's connection factory, making ``GuardedHandler``s up to the cap."""

    def __init__(self, settings: Settings, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settings = settings

    def __call__(self) -> Any:  # asyncio's protocol factory: one call per accepted connection
        cap = self._settings.max_connections
        if len(self._connections) >= cap:
            return _Refuse(cap)
        return GuardedHandler(
            self, loop=self._loop, header_timeout=self._settings.header_timeout_s, **self._kwargs
        )


class GuardedRunner(web.AppRunner):
    """``AppRunner`` whose connections are ``GuardedHandler``s."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._settings = settings

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up, as AppRunner does
        return GuardedServer(
            self._settings,
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )


def make_runner(app: web.Application, settings: Settings, **kwargs: Any) -> GuardedRunner:
    return GuardedRunner(
        app,
        settings,
        access_log=None,
        keepalive_timeout=KEEPALIVE_S,
        shutdown_timeout=SHUTDOWN_S,
        **kwargs,
    )


def run(app: web.Application, settings: Settings, on_ready: Callable[[], None]) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down gracefully (as ``web.run_app``)."""
    _raise_fd_limit(settings.max_connections)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runner = make_runner(app, settings, handle_signals=True)
    try:
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, settings.host, settings.port)
        loop.run_until_complete(site.start())
        on_ready()
        loop.run_forever()
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        loop.run_until_complete(runner.cleanup())
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _raise_fd_limit(max_connections: int) -> None:
    """Room for --max-connections sockets plus the server's own files, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning(
                "the open-file limit (%d) is below --max-connections + 1024; connections may fail "
                "before the cap is reached",
                new,
            )
