"""This server as a node of the cluster (API.md §14): its registration, heartbeat and fencing.

On PostgreSQL every server is a node: it registers with a fresh incarnation, reconciles only its
own rows, then heartbeats every ``settings.heartbeat_s``. Each beat also reaps: a node silent
for ``--node-timeout`` is declared lost by exactly one other node (one conditional UPDATE), which
crashes its sessions and interrupts its executions. A node whose beat finds itself lost (it was
paused, or cut off from the database) drops its sessions' workers, settles their rows as the
reaper would, and registers again; one whose id another process has taken stops. SIGTERM marks
the node ``stopped`` once its sessions are closed.

On SQLite the server is the only node (``app.py`` holds an exclusive lock on the file for the
server's life: a second server refuses to start): it reconciles every row as before (API.md §6),
and its row in ``nodes`` serves ``GET /api/v1/nodes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from server import __version__, errors
from server.clock import now_iso
from server.config import Settings
from server.core.sessions import SessionService
from server.pipeline.cluster_events import ClusterEvents
from server.store.nodes import NodeStore, Reaped, lost_message
from server.store.store import Store

log = logging.getLogger(__name__)


class NodeService:
    def __init__(
        self,
        *,
        store: Store,
        sessions: SessionService,
        settings: Settings,
        events: ClusterEvents | None = None,
        on_replaced: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.settings = settings
        self.events = events
        self.on_replaced = on_replaced
        self.node_id = settings.effective_node_id
        self.url = settings.effective_advertise_url
        self.incarnation = str(uuid.uuid4())
        self.nodes = NodeStore(store)
        self.clustered = not store.is_sqlite
        self.last_heartbeat = 0.0  # monotonic time of the last heartbeat that landed
        # Since when this node's heartbeats have landed without a gap (None: they are failing).
        # It judges others only after a whole timeout of its own: when the database comes back
        # after an outage, every heartbeat is old, and the nodes must not reap each other.
        self._steady_since: float | None = None
        self.reaped = 0  # nodes this one declared lost (metrics)
        self.rejoined = 0  # times this node found itself lost and came back (metrics)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ life

    async def start(self) -> tuple[int, int]:
        """Register and reconcile this node's rows; returns (sessions closed, executions ended)."""
        await self.nodes.register(
            node_id=self.node_id,
            url=self.url,
            incarnation=self.incarnation,
            version=__version__,
            max_sessions=self.settings.max_sessions,
        )
        self.last_heartbeat = self._steady_since = time.monotonic()
        # On SQLite every row is this server's; in a cluster only this node's (and pre-cluster
        # rows without a node): never another node's.
        mine = self.node_id if self.clustered else None
        return await self.store.reconcile_on_startup(now=now_iso(), node_id=mine)

    def start_heartbeat(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="node-heartbeat")

    async def stop(self) -> None:
        """After the sessions are closed (SIGTERM): ``stopped``."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.nodes.mark_stopped(node_id=self.node_id, incarnation=self.incarnation)
        except errors.StoreError:
            log.exception("could not mark node %s stopped", self.node_id)

    @property
    def heartbeat_age_s(self) -> float:
        return time.monotonic() - self.last_heartbeat

    # ------------------------------------------------------------------ the beat

    async def _beat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.beat()
            except errors.StoreError:
                self._steady_since = None
                log.warning("node %s: heartbeat failed; the database is unreachable", self.node_id)
            except Exception:  # noqa: BLE001 - the beat must go on
                self._steady_since = None
                log.exception("node %s: heartbeat failed", self.node_id)

    async def beat(self) -> None:
        """One heartbeat, then one reaping round (a cluster)."""
        status = await self.nodes.heartbeat(node_id=self.node_id, incarnation=self.incarnation)
        now = time.monotonic()
        if status == "up":
            if self._steady_since is None or now - self.last_heartbeat > self.settings.node_timeout_s:
                self._steady_since = now  # back after a gap others may have judged
            self.last_heartbeat = now
        elif status == "replaced":
            await self._replaced()
            return
        elif not self._stopping:
            await self._come_back(status)
        steady = self._steady_since is not None and now - self._steady_since >= self.settings.node_timeout_s
        if self.clustered and steady:
            for reaped in await self.nodes.reap(me=self.node_id, timeout_s=self.settings.node_timeout_s):
                self._announce(reaped)

    def _announce(self, reaped: Reaped) -> None:
        self.reaped += 1
        log.warning(
            "node %s was lost (no heartbeat for %g s): crashed %d session(s), interrupted %d execution(s)",
            reaped.node_id,
            self.settings.node_timeout_s,
            reaped.sessions,
            reaped.executions,
        )
        if self.events is not None:
            self.events.deliver(reaped.entries)  # this node's own subscribers hear it too

    async def _come_back(self, status: str) -> None:
        """The cluster declared this node lost: its sessions are gone; join again."""
        log.warning(
            "node %s finds itself %s (%s); dropping its %d session(s) and registering again",
            self.node_id,
            status,
            lost_message(self.node_id),
            len(self.sessions.live),
        )
        # Workers first: whatever happens next, this node stops acting for sessions the
        # cluster has given up. Then the rows still live (sessions made since the reaping).
        await self.sessions.drop(self.sessions.abandon())
        for reaped in await self.nodes.rejoin(node_id=self.node_id, incarnation=self.incarnation):
            if self.events is not None:
                self.events.deliver(reaped.entries)
        self.rejoined += 1
        self.last_heartbeat = self._steady_since = time.monotonic()

    async def _replaced(self) -> None:
        """Another process registered this node's id: it owns the node's rows now; stop."""
        if self._stopping:
            return
        log.error(
            "another process has registered node id %s; this one drops its sessions and stops "
            "(give each server its own --node-id)",
            self.node_id,
        )
        self._stopping = True
        await self.sessions.drop(self.sessions.abandon())
        if self.on_replaced is not None:
            self.on_replaced()

    # ------------------------------------------------------------------ the API

    async def list(self) -> list[dict[str, Any]]:
        return [
            {k: row[k] for k in ("id", "url", "status", "started_at", "heartbeat_at", "sessions", "version")}
            for row in await self.nodes.list_nodes()
        ]
