"""``GET /metrics``: this node's state for Prometheus, read from the parts that keep it.

Nothing on the hot paths calls prometheus-client: the parts keep plain counters (the writer its
events, the finalizer its ended executions, the worker pool its checkpoints, ...) and a
collector reads them at scrape time into a registry of this app's own (tests run many apps in
one process). The endpoint is outside ``/api/v1`` (Prometheus' convention) and behind the same
token as the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from server import __version__
from server.http.access import METRICS
from server.http.forward import FORWARDER
from server.http.keys import LISTENER, SERVICES
from server.http.ws import CONNECTIONS

P = "vm_system_"


class _NodeCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        services = self.app.get(SERVICES)
        if services is None:  # not started yet
            return
        sessions, pipeline, nodes = services.sessions, services.sessions.pipeline, services.nodes
        yield InfoMetricFamily(
            P + "node",
            "This node",
            value={"node_id": nodes.node_id, "url": nodes.url, "version": __version__},
        )
        by_status = GaugeMetricFamily(P + "sessions", "Live sessions on this node", labels=["status"])
        counts = {"starting": 0, "ready": 0}
        for live in list(sessions.live.values()):
            status = live.row["status"]
            counts[status] = counts.get(status, 0) + 1
        for status, n in sorted(counts.items()):
            by_status.add_metric([status], n)
        yield by_status
        yield GaugeMetricFamily(
            P + "executions_running",
            "Executions running on this node (background ones included)",
            value=len(pipeline.running) + len(pipeline.backgrounds),
        )
        ended = CounterMetricFamily(P + "executions_ended", "Executions ended, by status", labels=["status"])
        for status in ("ok", "error", "timeout", "cancelled"):
            ended.add_metric([status], pipeline.finalizer.ended.get(status, 0))
        yield ended
        yield CounterMetricFamily(
            P + "events_written", "Events committed by this node", value=pipeline.writer.events_written
        )
        yield CounterMetricFamily(
            P + "checkpoints", "Checkpoints forked by session workers", value=services.pool.checkpoints_taken
        )
        yield CounterMetricFamily(
            P + "rollbacks", "Sessions continued from their checkpoint", value=sessions.ctx.rollbacks
        )
        yield CounterMetricFamily(
            P + "resets", "Sessions rebuilt from their template", value=sessions.ctx.resets
        )
        yield from self._websockets()
        yield from self._cluster(services)

    def _websockets(self) -> Iterator[Any]:
        conns = list(self.app.get(CONNECTIONS, ()))
        yield GaugeMetricFamily(P + "websocket_connections", "Open WebSocket connections", value=len(conns))
        yield GaugeMetricFamily(
            P + "websocket_subscriptions",
            "Subscriptions (feeds) of the open WebSocket connections",
            value=sum(len(c.feeds) for c in conns),
        )

    def _cluster(self, services: Any) -> Iterator[Any]:
        nodes = services.nodes
        yield GaugeMetricFamily(
            P + "heartbeat_age_seconds",
            "Seconds since this node's last heartbeat landed in the database",
            value=round(nodes.heartbeat_age_s, 3),
        )
        yield CounterMetricFamily(P + "nodes_reaped", "Nodes this node declared lost", value=nodes.reaped)
        yield CounterMetricFamily(
            P + "node_rejoins", "Times this node found itself lost and registered again", value=nodes.rejoined
        )
        forwarded = CounterMetricFamily(
            P + "forwarded_requests",
            "Requests forwarded to the node holding their session",
            labels=["transport", "outcome"],
        )
        forwarder = self.app.get(FORWARDER)
        for (transport, outcome), n in sorted(forwarder.counts.items() if forwarder else ()):
            forwarded.add_metric([transport, outcome], n)
        yield forwarded
        events = services.events
        if events is not None:
            yield CounterMetricFamily(
                P + "cluster_notices", "Change notices received from other nodes", value=events.notices
            )
            yield CounterMetricFamily(
                P + "cluster_rows_read",
                "Other nodes' events read for subscribers here",
                value=events.rows_read,
            )
        listener = self.app.get(LISTENER)
        if listener is not None:
            yield GaugeMetricFamily(
                P + "cluster_listener_up", "The LISTEN connection is up", value=int(listener.connected)
            )
            yield CounterMetricFamily(
                P + "cluster_listener_reconnects",
                "Times the LISTEN connection was regained",
                value=listener.reconnects,
            )


def setup(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(app))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(METRICS, metrics)
