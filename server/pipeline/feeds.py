"""Subscriptions to an execution's or a session's events: stored backlog, then live, losslessly.

A feed registers with the live source *before* it reads the stored backlog, and buffers what
the live source delivers meanwhile; after the backlog it drains the buffer, skipping what it
already sent (by ``seq`` for an execution, by event ``id`` for a session), and only then goes
live. Everything it sends goes into a ``Sink`` (a WebSocket connection, or any other
transport), so the protocol can be read and tested without a socket.

``FeedSource`` pairs a live registry with a reader of stored events (the ``Store``). The live
registry is this node's ``EventBus``, or in a cluster ``BothLive``: the bus and the other nodes'
events (``server.pipeline.cluster_events``), which call the same ``on_events``/
``on_execution``/``on_session`` callbacks; a feed's cursor makes a row delivered twice harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from server.events import EventTuple, events_array, runs_by_execution
from server.pipeline.bus import Subscriber

BACKLOG_PAGE = 5000


class Sink(Protocol):
    """Where a feed sends its messages."""

    @property
    def closed(self) -> bool: ...

    def push(self, msg: dict[str, Any]) -> None:
        """Queue a live message (never waits; a sink that cannot keep up closes itself)."""

    async def push_wait(self, msg: dict[str, Any]) -> None:
        """Queue a backlog message, waiting for room (the backlog is the reader's to pace)."""


class LiveEvents(Protocol):
    """Registration for events as they are committed (``EventBus``)."""

    def subscribe_execution(self, execution_id: str, sub: Subscriber) -> None: ...
    def unsubscribe_execution(self, execution_id: str, sub: Subscriber) -> None: ...
    def subscribe_session(self, session_id: str, sub: Subscriber) -> None: ...
    def unsubscribe_session(self, session_id: str, sub: Subscriber) -> None: ...


class StoredEvents(Protocol):
    """Reads of what is already committed (``Store``)."""

    async def last_session_event_id(self, *, session_id: str) -> int: ...
    async def list_events(self, *, execution_id: str, after_seq: int, limit: int) -> list[EventTuple]: ...
    async def list_session_events(
        self, *, session_id: str, after_id: int, limit: int
    ) -> list[EventTuple]: ...
    async def get_execution(self, *, execution_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class FeedSource:
    live: LiveEvents
    stored: StoredEvents


@dataclass(frozen=True)
class BothLive:
    """Two live sources as one: this node's bus and the other nodes' events (a cluster)."""

    local: LiveEvents
    remote: LiveEvents

    def subscribe_execution(self, execution_id: str, sub: Subscriber) -> None:
        self.local.subscribe_execution(execution_id, sub)
        self.remote.subscribe_execution(execution_id, sub)

    def unsubscribe_execution(self, execution_id: str, sub: Subscriber) -> None:
        self.local.unsubscribe_execution(execution_id, sub)
        self.remote.unsubscribe_execution(execution_id, sub)

    def subscribe_session(self, session_id: str, sub: Subscriber) -> None:
        self.local.subscribe_session(session_id, sub)
        self.remote.subscribe_session(session_id, sub)

    def unsubscribe_session(self, session_id: str, sub: Subscriber) -> None:
        self.local.unsubscribe_session(session_id, sub)
        self.remote.unsubscribe_session(session_id, sub)


class _Events(NamedTuple):
    execution_id: str
    session_id: str
    rows: Sequence[EventTuple]


class Feed:
    """What execution and session feeds share: the cursor, the live buffer and the switch."""

    key = 0  # index of the cursor field in an event row: 2 (seq) or 0 (id)

    def __init__(
        self, source: FeedSource, sink: Sink, feed_id: str, cursor: int, on_end: Callable[[Feed], None]
    ) -> None:
        self.source = source
        self.sink = sink
        self.id = feed_id
        self.cursor = cursor  # last seq (execution) or last event id (session) sent
        self.live = False  # False while the backlog is being read
        # What the live source delivered while the backlog was being read, in arrival order.
        self.buffer: list[_Events | dict[str, Any]] = []
        self.done = False
        self._on_end = on_end

    # -- live callbacks (event loop thread) --------------------------------------------

    def on_events(self, execution_id: str, session_id: str, rows: Sequence[EventTuple]) -> None:
        if self.done:
            return
        if not self.live:
            self.buffer.append(_Events(execution_id, session_id, rows))
            return
        frame = self.frame(execution_id, session_id, rows)
        if frame is not None:
            self.sink.push(frame)

    def on_execution(self, execution: dict[str, Any]) -> None:
        self._deliver({"type": "execution", "subscription": self.id, "execution": execution})

    def on_session(self, session: dict[str, Any]) -> None:
        self._deliver({"type": "session", "subscription": self.id, "session": session})

    def _deliver(self, msg: dict[str, Any]) -> None:
        if self.done:
            return
        if not self.live:
            self.buffer.append(msg)
        else:
            self.sink.push(msg)

    # -- the cursor --------------------------------------------------------------------

    def _fresh(self, rows: Sequence[EventTuple]) -> list[EventTuple]:
        key, cursor = self.key, self.cursor
        if int(rows[0][key]) > cursor:
            fresh = list(rows)
        else:
            fresh = [r for r in rows if int(r[key]) > cursor]
        if fresh:
            self.cursor = int(fresh[-1][key])
        return fresh

    def frame(self, execution_id: str, session_id: str, rows: Sequence[EventTuple]) -> dict[str, Any] | None:
        """An ``events`` message with the rows past the cursor (None when nothing is new)."""
        fresh = self._fresh(rows)
        if not fresh:
            return None
        return {
            "type": "events",
            "subscription": self.id,
            "execution_id": execution_id,
            "session_id": session_id,
            "events": events_array(fresh),
        }

    async def _go_live(self) -> bool:
        """Send what arrived during the backlog, in order, then go live.

        Returns True if the feed ended on the way (its execution ended).
        """
        while self.buffer:
            item = self.buffer.pop(0)
            if isinstance(item, _Events):
                frame = self.frame(*item)
                if frame is not None:
                    await self.sink.push_wait(frame)
                continue
            await self.sink.push_wait(item)
            if self._ends_with(item):
                await self.sink.push_wait({"type": "complete", "subscription": self.id})
                self.close()
                return True
        self.live = True  # no await since the buffer was seen empty: nothing slips between
        return False

    def _ends_with(self, msg: dict[str, Any]) -> bool:
        return False

    def close(self) -> None:
        """Stop listening; the owner forgets the feed. Idempotent."""
        if self.done:
            return
        self.done = True
        self._detach()
        self._on_end(self)

    def _detach(self) -> None:
        raise NotImplementedError


class ExecutionFeed(Feed):
    """Every event of one execution with ``seq > after_seq``, then its final record and ``complete``."""

    key = 2

    def __init__(
        self,
        source: FeedSource,
        sink: Sink,
        feed_id: str,
        record: dict[str, Any],
        after_seq: int,
        on_end: Callable[[Feed], None],
    ) -> None:
        super().__init__(source, sink, feed_id, after_seq, on_end)
        self.record = record
        self.execution_id: str = record["id"]
        self.session_id: str = record["session_id"]

    def on_execution(self, execution: dict[str, Any]) -> None:
        if self.done or execution["status"] == "running":
            return  # execution subscribers hear only the end
        super().on_execution(execution)
        if self.live:
            self.sink.push({"type": "complete", "subscription": self.id})
            self.close()

    def _ends_with(self, msg: dict[str, Any]) -> bool:
        return msg["type"] == "execution"

    def attach(self, reply: dict[str, Any]) -> None:
        """Follow an execution from its start: called before any of its events is published,
        so everything it will have comes live and nothing has to be read back."""
        self.sink.push(reply)
        self.live = True
        self.source.live.subscribe_execution(self.execution_id, self)

    async def open(self, reply: dict[str, Any]) -> None:
        """Register, send ``reply`` (the subscribe/accept answer), then the backlog, then live."""
        self.source.live.subscribe_execution(self.execution_id, self)
        self.sink.push(reply)
        await self._send_backlog()
        if await self._go_live() or self.done:
            return
        record = self.record
        if record["status"] == "running":
            record = await self.source.stored.get_execution(execution_id=self.execution_id) or record
        if record["status"] != "running" and not self.done:
            # It ended before we registered, or while we read: its last batch may have been
            # committed after our read but published before we registered, so read once more.
            self.live = False
            await self._send_backlog()
            await self._go_live()
            if not self.done:
                await self.sink.push_wait({"type": "execution", "subscription": self.id, "execution": record})
                await self.sink.push_wait({"type": "complete", "subscription": self.id})
                self.close()

    async def _send_backlog(self) -> None:
        """Stored events past the cursor, page by page."""
        while not self.done and not self.sink.closed:
            rows = await self.source.stored.list_events(
                execution_id=self.execution_id, after_seq=self.cursor, limit=BACKLOG_PAGE
            )
            frame = self.frame(self.execution_id, self.session_id, rows) if rows else None
            if frame is not None:
                await self.sink.push_wait(frame)
            if len(rows) < BACKLOG_PAGE:
                return

    def _detach(self) -> None:
        self.source.live.unsubscribe_execution(self.execution_id, self)


class SessionFeed(Feed):
    """Live events of every execution in a session (with ``after_id``, the stored ones first).

    Without ``after_id`` the cursor starts at the session's last stored event, read before
    registering: "from now on" is then a cursor like any other, which a live source that has to
    catch up (the cluster's, after its connection was down) can resume from.
    """

    key = 0

    def __init__(
        self,
        source: FeedSource,
        sink: Sink,
        feed_id: str,
        session_id: str,
        after_id: int | None,
        on_end: Callable[[Feed], None],
    ) -> None:
        super().__init__(source, sink, feed_id, after_id or 0, on_end)
        self.session_id = session_id
        self.after_id = after_id

    async def open(self, reply: dict[str, Any]) -> None:
        if self.after_id is None:
            self.cursor = await self.source.stored.last_session_event_id(session_id=self.session_id)
        self.source.live.subscribe_session(self.session_id, self)
        self.sink.push(reply)
        while not self.done and not self.sink.closed:
            rows = await self.source.stored.list_session_events(
                session_id=self.session_id, after_id=self.cursor, limit=BACKLOG_PAGE
            )
            for exec_id, run in runs_by_execution(rows):  # one frame per execution run
                frame = self.frame(exec_id, self.session_id, run)
                if frame is not None:
                    await self.sink.push_wait(frame)
            if len(rows) < BACKLOG_PAGE:
                break
        await self._go_live()

    def _detach(self) -> None:
        self.source.live.unsubscribe_session(self.session_id, self)
