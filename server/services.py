"""The service container handed to every transport (REST, WebSocket, UI)."""

from __future__ import annotations

from dataclasses import dataclass

from server.config import Settings
from server.core.executions import ExecutionService
from server.core.nodes import NodeService
from server.core.sessions import SessionService
from server.core.templates import TemplateService
from server.pipeline.bus import EventBus
from server.pipeline.cluster_events import ClusterEvents
from server.pipeline.feeds import FeedSource
from server.runtime.supervisor import WorkerPool
from server.store.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    bus: EventBus
    templates: TemplateService
    sessions: SessionService
    executions: ExecutionService
    feeds: FeedSource
    nodes: NodeService
    pool: WorkerPool
    events: ClusterEvents | None = None  # the other nodes' live events (a cluster)
