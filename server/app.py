"""The application factory used by ``vm-system serve``, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from server import logs
from server.clock import now_iso
from server.config import Settings
from server.core.executions import ExecutionService
from server.core.policy import Policy
from server.core.sessions import SessionService
from server.core.templates import TemplateService
from server.http import rest, transport
from server.http.access import add_security_headers
from server.http.keys import MAX_BODY, SERVICES
from server.http.middleware import make_middlewares
from server.pipeline.bus import EventBus
from server.pipeline.executions import ExecutionPipeline
from server.pipeline.feeds import FeedSource
from server.pipeline.writer import EventWriter
from server.runtime.supervisor import WorkerPool
from server.store import wal
from server.store.store import Store

log = logging.getLogger("vm_system")

STORE = web.AppKey("store", Store)
POOL = web.AppKey("worker_pool", WorkerPool)


def create_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    """Build the server. ``store`` may be given by tests that inject faults."""
    app = web.Application(
        middlewares=make_middlewares(settings),
        client_max_size=settings.max_body_bytes,
        # One request log line, ours (with the request id and the token masked), whatever
        # runner serves the app: aiohttp's access log would write ?token= in clear.
        handler_args={"access_log": None},
    )
    app[MAX_BODY] = settings.max_body_bytes
    policy = Policy.start(settings)  # ConfigError when this machine cannot keep the policy
    app[STORE] = store if store is not None else Store(settings.db_url)
    app[POOL] = WorkerPool()

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        st = app[STORE]
        await st.open()
        closed, interrupted = await st.reconcile_on_startup(now=now_iso())
        if closed or interrupted:
            log.info(
                "closed %d session(s) and interrupted %d execution(s) left by a previous run",
                closed,
                interrupted,
            )
        yield
        await st.close()
        log.info("database closed; vm-system stopped")

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = app[POOL]
        await pool.start()
        yield
        await pool.stop()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        st = app[STORE]
        bus = EventBus()
        writer = EventWriter(st, bus, await st.max_event_id())
        templates = TemplateService(st, policy)
        pipeline = ExecutionPipeline(st, writer, bus, cancel_grace_s=settings.cancel_grace_s)
        sessions = SessionService(
            store=st,
            templates=templates,
            pool=app[POOL],
            bus=bus,
            writer=writer,
            pipeline=pipeline,
            settings=settings,
            policy=policy,
        )
        app[SERVICES] = _services(settings, st, bus, templates, sessions)
        sessions.start_reaper()
        checkpoint = asyncio.create_task(wal.keep_small(st), name="wal-keeper")
        yield
        await sessions.shutdown()
        checkpoint.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checkpoint
        await writer.flush()

    app.cleanup_ctx.extend([store_ctx, runtime_ctx, services_ctx])
    app.on_response_prepare.append(add_security_headers)
    rest.add_routes(app)
    _optional_transports(app, settings)
    return app


def _services(settings, st, bus, templates, sessions):  # type: ignore[no-untyped-def]
    from server.services import Services

    return Services(
        settings=settings,
        store=st,
        bus=bus,
        templates=templates,
        sessions=sessions,
        executions=ExecutionService(st, sessions),
        feeds=FeedSource(live=bus, stored=st),
    )


def _optional_transports(app: web.Application, settings: Settings) -> None:
    """WebSocket endpoint and browser UI (registered when their modules are present)."""
    with contextlib.suppress(ImportError):
        from server.http import ws

        ws.setup(app, settings)
    try:
        import server.http.ui as ui
    except ImportError:
        return
    ui.setup(app, settings)


def run_server(settings: Settings) -> None:
    """``vm-system serve``: generate a token if needed, then serve until SIGINT/SIGTERM."""
    logs.configure(settings.log_level)
    generated = settings.token is None
    settings = settings.with_generated_token()
    app = create_app(settings)

    def ready() -> None:
        log.info(
            "vm-system listening on http://%s:%s (db: %s)",
            _url_host(settings.host),
            settings.port,
            settings.db_url.split("://", 1)[0],
        )
        if settings.token is None and not settings.listens_on_loopback:
            log.warning("no token (--no-token): anyone who can reach this address can run code here")
        elif settings.token is not None and generated:
            # The one place a token is written out, as Jupyter does: the operator needs it.
            hosts = (
                [socket.gethostname(), "127.0.0.1"] if settings.host in ("0.0.0.0", "::") else [settings.host]
            )
            urls = "\n".join(
                f"    http://{_url_host(h)}:{settings.port}/?token={settings.token}" for h in hosts
            )
            log.warning("a token was generated for this server; open the UI at\n%s", urls)

    transport.run(app, settings, on_ready=ready)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
