"""The service container handed to every transport (REST, WebSocket, UI)."""

from __future__ import annotations

from dataclasses import dataclass

from server.config import Settings
from server.core.executions import ExecutionService
from server.core.sessions import SessionService
from server.core.templates import TemplateService
from server.pipeline.bus import EventBus
from server.pipeline.feeds import FeedSource
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
