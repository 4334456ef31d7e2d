"""In-process publish/subscribe for committed events and execution/session changes.

Publishing happens only after the events are committed, so a subscriber never sees an event
the store does not have. Subscribers register before they read the stored backlog and
de-duplicate by ``seq``/``id`` themselves (see ``server.pipeline.feeds``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

from server.events import EventTuple, runs_by_execution

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    def on_events(self, execution_id: str, session_id: str, rows: Sequence[EventTuple]) -> None: ...

    def on_execution(self, execution: dict[str, Any]) -> None: ...

    def on_session(self, session: dict[str, Any]) -> None: ...


class EventBus:
    def __init__(self) -> None:
        self._by_execution: dict[str, set[Subscriber]] = defaultdict(set)
        self._by_session: dict[str, set[Subscriber]] = defaultdict(set)
        # Session of each running execution (event rows do not carry it): learnt from the
        # execution's start record, dropped after its end record, which follows its last event.
        self._session_of: dict[str, str] = {}

    def subscribe_execution(self, execution_id: str, sub: Subscriber) -> None:
        self._by_execution[execution_id].add(sub)

    def subscribe_session(self, session_id: str, sub: Subscriber) -> None:
        self._by_session[session_id].add(sub)

    def unsubscribe_execution(self, execution_id: str, sub: Subscriber) -> None:
        _discard(self._by_execution, execution_id, sub)

    def unsubscribe_session(self, session_id: str, sub: Subscriber) -> None:
        _discard(self._by_session, session_id, sub)

    def publish_events(self, rows: Sequence[EventTuple]) -> None:
        """Fan out a committed batch: rows grouped per execution, order preserved."""
        if not rows or not (self._by_execution or self._by_session):
            return
        for exec_id, chunk in runs_by_execution(rows):
            session_id = self._session_of.get(exec_id, "")
            for sub in _targets(self._by_execution.get(exec_id), self._by_session.get(session_id)):
                try:
                    sub.on_events(exec_id, session_id, chunk)
                except Exception:  # noqa: BLE001 - one bad subscriber must not stop the others
                    log.exception("event subscriber failed")

    def publish_execution(self, execution: dict[str, Any]) -> None:
        if execution["status"] == "running":
            self._session_of[execution["id"]] = execution["session_id"]
        else:
            self._session_of.pop(execution["id"], None)
        for sub in _targets(
            self._by_execution.get(execution["id"]), self._by_session.get(execution["session_id"])
        ):
            try:
                sub.on_execution(execution)
            except Exception:  # noqa: BLE001
                log.exception("execution subscriber failed")

    def publish_session(self, session: dict[str, Any]) -> None:
        for sub in list(self._by_session.get(session["id"], ())):
            try:
                sub.on_session(session)
            except Exception:  # noqa: BLE001
                log.exception("session subscriber failed")


def _targets(a: set[Subscriber] | None, b: set[Subscriber] | None) -> list[Subscriber]:
    if not a:
        return list(b) if b else []
    if not b:
        return list(a)
    return list(a | b)


def _discard(index: dict[str, set[Subscriber]], key: str, sub: Subscriber) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]
