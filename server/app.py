"""The application factory used by ``vm-system serve``, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from server import logs
from server.config import Settings
from server.core.directory import Directory
from server.core.executions import ExecutionService
from server.core.nodes import NodeService
from server.core.policy import Policy
from server.core.sessions import SessionService
from server.core.templates import TemplateService
from server.http import metrics, routes, transport
from server.http.access import add_security_headers
from server.http.forward import FORWARDER, Forwarder
from server.http.keys import LISTENER, MAX_BODY, ON_REPLACED, SERVICES
from server.http.middleware import make_middlewares
from server.pipeline.bus import EventBus
from server.pipeline.cluster_events import ClusterEvents
from server.pipeline.executions import ExecutionPipeline
from server.pipeline.feeds import BothLive, FeedSource
from server.pipeline.ids import BlockIds, CounterIds, IdSource
from server.pipeline.writer import EventWriter
from server.runtime.supervisor import WorkerPool
from server.services import Services
from server.store import wal
from server.store.listen import NotifyListener
from server.store.lock import SqliteServerLock
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
    # On PostgreSQL every server is a node of a cluster (API.md §14); SQLite is one node.
    cluster = not app[STORE].is_sqlite

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        st = app[STORE]
        # SQLite serves one server: the file is locked before anything reads or writes it.
        lock = SqliteServerLock(st.sqlite_path) if st.sqlite_path else None
        if lock is not None:
            lock.acquire()
        try:
            await st.open()
            if cluster:
                st.notify_as = settings.effective_node_id  # commits tell the other nodes
            yield
            await st.close()
        finally:
            if lock is not None:
                lock.release()
        log.info("database closed; vm-system stopped")

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = app[POOL]
        await pool.start()
        yield
        await pool.stop()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        st = app[STORE]
        bus = EventBus()
        writer = EventWriter(st, bus, await _event_ids(st))
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
        events = ClusterEvents(st, settings.effective_node_id) if cluster else None
        nodes = NodeService(
            store=st, sessions=sessions, settings=settings, events=events, on_replaced=app.get(ON_REPLACED)
        )
        closed, interrupted = await nodes.start()  # registration, then this node's own rows
        if closed or interrupted:
            log.info(
                "closed %d session(s) and interrupted %d execution(s) left by a previous run",
                closed,
                interrupted,
            )
        async with _cluster(app, settings, st, events, nodes, sessions):
            app[SERVICES] = Services(
                settings=settings,
                store=st,
                bus=bus,
                templates=templates,
                sessions=sessions,
                executions=ExecutionService(st, sessions),
                feeds=FeedSource(live=bus if events is None else BothLive(bus, events), stored=st),
                nodes=nodes,
                pool=app[POOL],
                events=events,
            )
            sessions.start_reaper()
            nodes.start_heartbeat()
            checkpoint = asyncio.create_task(wal.keep_small(st), name="wal-keeper")
            yield
            await sessions.shutdown()
            checkpoint.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoint
            await writer.flush()
            await writer.ids.close()
            await nodes.stop()  # "stopped" once its sessions are closed

    app.cleanup_ctx.extend([store_ctx, runtime_ctx, services_ctx])
    app.on_response_prepare.append(add_security_headers)
    routes.add_routes(app, cluster=cluster)
    metrics.setup(app)
    _optional_transports(app, settings)
    return app


async def _event_ids(st: Store) -> IdSource:
    """Event ids: this process's counter on SQLite, blocks of the database's sequence otherwise."""
    if st.is_sqlite:
        return CounterIds(await st.max_event_id())
    ids = BlockIds(st)
    await ids.start()
    return ids


@contextlib.asynccontextmanager
async def _cluster(
    app: web.Application,
    settings: Settings,
    st: Store,
    events: ClusterEvents | None,
    nodes: NodeService,
    sessions: SessionService,
) -> AsyncIterator[None]:
    """A cluster's extras for the life of the services: the listener of the other nodes'
    changes and the forwarder to the nodes that hold sessions (nothing on SQLite)."""
    if events is None:
        yield
        return
    listener = NotifyListener(
        st.url,
        st.channel,
        name=f"vm-system listen {settings.effective_node_id}"[:63],
        on_payload=events.on_payload,
        on_connected=events.on_connected,
    )
    await listener.start()
    events.start()
    forwarder = Forwarder(settings, Directory(nodes=nodes.nodes, sessions=sessions))
    await forwarder.start()
    events.on_node = forwarder.node_down
    app[FORWARDER] = forwarder
    app[LISTENER] = listener
    try:
        yield
    finally:
        await forwarder.close()
        await listener.stop()
        await events.stop()


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
    # A process whose node id another one has taken stops as on SIGTERM (server/core/nodes.py).
    app[ON_REPLACED] = lambda: os.kill(os.getpid(), signal.SIGTERM)

    def ready() -> None:
        log.info(
            "vm-system listening on http://%s:%s (db: %s, node %s at %s)",
            _url_host(settings.host),
            settings.port,
            settings.db_url.split("://", 1)[0],
            settings.effective_node_id,
            settings.effective_advertise_url,
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
