"""The second live source of feeds: what other nodes commit, learnt from NOTIFY, read by cursor.

Feeds register here exactly as with the local ``EventBus`` (``server.pipeline.feeds``). For each
execution and each session that has subscribers this node keeps a cursor (the last seq, or the
last event id, it delivered). A notice from another node says which executions got events up to
which seq and id; if that is past the cursor, the rows are read from the database, past the
cursor, and handed to the subscribers, which de-duplicate against their own cursors as they do
for the bus. Notices of rows already read cost nothing, so a burst of commits is read in a few
pages. Execution starts and ends, and session changes, are read and delivered the same way.

No loss: a subscriber registers before it reads its backlog; the first notice that concerns it
after that starts its cursor at the first row of that commit (every later commit of the same
execution or session has larger seqs and ids, see ``pipeline/executions.py``), and when the
listening connection was down, every cursor is caught up from the database once it is back.
Notices from this node itself are ignored: its own commits reach its feeds through the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.events import EventTuple, runs_by_execution
from server.pipeline.bus import Subscriber
from server.store import notices as n

log = logging.getLogger(__name__)

PAGE = 5000
_CATCH_UP = None  # queued after a reconnection
# What a running execution's record holds in the fields an end fills in.
_STARTED: dict[str, Any] = {
    "status": "running",
    "ended_at": None,
    "result": None,
    "error": None,
    "metrics": {},
}


class Reads(Protocol):
    """What this source reads (``Store``)."""

    async def list_events(self, *, execution_id: str, after_seq: int, limit: int) -> list[EventTuple]: ...
    async def list_session_events(
        self, *, session_id: str, after_id: int, limit: int
    ) -> list[EventTuple]: ...
    async def get_execution(self, *, execution_id: str) -> dict[str, Any] | None: ...
    async def get_session(self, *, session_id: str) -> dict[str, Any] | None: ...


@dataclass
class _Interest:
    subs: set[Subscriber] = field(default_factory=set)
    cursor: int | None = None  # last seq (execution) or event id (session) delivered
    status: str | None = None  # a session's last status delivered (catch-up)

    def start(self) -> int:
        """Where to read from when no notice set the cursor: the subscribers' own cursors."""
        if self.cursor is None:
            self.cursor = min((int(getattr(s, "cursor", 0)) for s in self.subs), default=0)
        return self.cursor


class ClusterEvents:
    def __init__(self, store: Reads, node_id: str) -> None:
        self.store = store
        self.node_id = node_id
        self._executions: dict[str, _Interest] = {}
        self._sessions: dict[str, _Interest] = {}
        self._session_of: dict[str, str] = {}  # execution -> session, learnt from start notices
        self._queue: asyncio.Queue[list[n.Notice] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Told when a node is declared lost or stopped (the forwarder gives up on it).
        self.on_node: Callable[[str, str], None] | None = None
        self.notices = 0  # notices from other nodes (metrics)
        self.rows_read = 0  # event rows read for subscribers (metrics)

    # -- the LiveEvents registry ---------------------------------------------------------

    def subscribe_execution(self, execution_id: str, sub: Subscriber) -> None:
        self._executions.setdefault(execution_id, _Interest()).subs.add(sub)

    def unsubscribe_execution(self, execution_id: str, sub: Subscriber) -> None:
        _discard(self._executions, execution_id, sub)

    def subscribe_session(self, session_id: str, sub: Subscriber) -> None:
        self._sessions.setdefault(session_id, _Interest()).subs.add(sub)

    def unsubscribe_session(self, session_id: str, sub: Subscriber) -> None:
        _discard(self._sessions, session_id, sub)

    # -- input ---------------------------------------------------------------------------

    def on_payload(self, payload: str) -> None:
        """A NOTIFY payload (called by the listener; never raises)."""
        try:
            origin, found = n.parse(payload)
        except Exception:  # noqa: BLE001 - a payload we cannot read is skipped, not fatal
            log.warning("unreadable cluster notice skipped: %.200r", payload)
            return
        if origin != self.node_id and found:
            self.notices += len(found)
            self._queue.put_nowait(found)

    def on_connected(self, again: bool) -> None:
        """The listening connection is up; after an outage, catch every cursor up."""
        if again:
            self._queue.put_nowait(_CATCH_UP)

    def deliver(self, entries: Iterable[str]) -> None:
        """Changes this node committed outside its own pipeline (it reaped a lost node)."""
        _origin, found = n.parse(" ".join(["local", *entries]))
        if found:
            self._queue.put_nowait(found)

    # -- the reader ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item is _CATCH_UP:
                    await self._catch_up()
                else:
                    for notice in item:
                        await self._handle(notice)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next notice (or catch-up) reads again
                log.exception("could not deliver other nodes' changes; will read them again")
                self._queue.put_nowait(_CATCH_UP)
                await asyncio.sleep(0.5)

    async def _handle(self, notice: n.Notice) -> None:
        if isinstance(notice, n.EventsNotice):
            eid = notice.execution_id
            interest = self._executions.get(eid)
            if interest is not None:
                if interest.cursor is None:
                    interest.cursor = notice.first_seq - 1
                if interest.cursor < notice.last_seq:
                    await self._read_execution(eid, interest)
            if self._sessions:
                sid = await self._session(eid)
                sint = self._sessions.get(sid) if sid else None
                if sid and sint is not None:
                    if sint.cursor is None:
                        sint.cursor = notice.first_id - 1
                    if sint.cursor < notice.last_id:
                        await self._read_session(sid, sint)
        elif isinstance(notice, n.ExecutionNotice):
            eid = notice.execution_id
            if notice.session_id is not None and notice.status == "running":
                self._session_of[eid] = notice.session_id
            sid = notice.session_id or (await self._session(eid) if self._sessions else None)
            if _subs(self._executions.get(eid), self._sessions.get(sid) if sid else None):
                record = await self._record_as_of(notice)
                targets = _subs(self._executions.get(eid), self._sessions.get(sid) if sid else None)
                for sub in targets if record is not None else ():
                    _call(sub.on_execution, record)
            if notice.status != "running":
                self._session_of.pop(eid, None)
        elif isinstance(notice, n.SessionNotice):
            await self._session_changed(notice.session_id)
        elif isinstance(notice, n.NodeNotice) and self.on_node is not None:
            _call(self.on_node, notice.node_id, notice.status)

    async def _record_as_of(self, notice: n.ExecutionNotice) -> dict[str, Any] | None:
        """The execution's record as the notice describes it.

        The row is read later than it was committed: a start may have ended since, and its end
        must reach subscribers only after its events, when its own notice comes. A start is told
        as the start it was; before an end, an execution subscriber gets the events it misses.
        """
        record = await self.store.get_execution(execution_id=notice.execution_id)
        if record is None:
            return None
        if notice.status == "running":
            if record["status"] != "running":
                record = {**record, **_STARTED}
            return record
        interest = self._executions.get(notice.execution_id)
        last_seq = int((record.get("metrics") or {}).get("event_count") or 0)
        if interest is not None and interest.cursor is not None and interest.cursor < last_seq:
            await self._read_execution(notice.execution_id, interest)
        return record

    async def _session(self, execution_id: str) -> str | None:
        sid = self._session_of.get(execution_id)
        if sid is None:
            record = await self.store.get_execution(execution_id=execution_id)
            if record is None:
                return None
            sid = self._session_of[execution_id] = record["session_id"]
        return sid

    async def _read_execution(self, execution_id: str, interest: _Interest) -> None:
        session_id = await self._session(execution_id) or ""
        while interest.subs:
            rows = await self.store.list_events(
                execution_id=execution_id, after_seq=interest.start(), limit=PAGE
            )
            if not rows:
                return
            interest.cursor = int(rows[-1][2])
            self.rows_read += len(rows)
            for sub in list(interest.subs):
                _call(sub.on_events, execution_id, session_id, rows)
            if len(rows) < PAGE:
                return

    async def _read_session(self, session_id: str, interest: _Interest) -> set[str]:
        """Deliver the session's rows past its cursor; the executions they belong to."""
        seen: set[str] = set()
        while interest.subs:
            rows = await self.store.list_session_events(
                session_id=session_id, after_id=interest.start(), limit=PAGE
            )
            if not rows:
                break
            interest.cursor = int(rows[-1][0])
            self.rows_read += len(rows)
            for exec_id, run in runs_by_execution(rows):
                seen.add(exec_id)
                for sub in list(interest.subs):
                    _call(sub.on_events, exec_id, session_id, run)
            if len(rows) < PAGE:
                break
        return seen

    async def _session_changed(self, session_id: str) -> None:
        interest = self._sessions.get(session_id)
        if interest is None:
            return
        row = await self.store.get_session(session_id=session_id)
        if row is None:
            return
        interest.status = row["status"]
        for sub in list(interest.subs):
            _call(sub.on_session, row)

    async def _catch_up(self) -> None:
        """After an outage of the listener: read every cursor up to now, and the ends missed."""
        self._session_of.clear()
        for eid, interest in list(self._executions.items()):
            await self._read_execution(eid, interest)
            record = await self.store.get_execution(execution_id=eid)
            if record is not None and record["status"] != "running":
                for sub in list(interest.subs):
                    _call(sub.on_execution, record)
        for sid, interest in list(self._sessions.items()):
            for eid in await self._read_session(sid, interest):
                record = await self.store.get_execution(execution_id=eid)
                if record is not None and record["status"] != "running":
                    for sub in list(interest.subs):
                        _call(sub.on_execution, record)
            # A change missed while deaf: one the subscribers knew of, or an end (a repeated
            # "closed" is harmless, a missed one is not).
            row = await self.store.get_session(session_id=sid)
            if row is not None and row["status"] != interest.status:
                if interest.status is not None or row["status"] in ("crashed", "closed"):
                    await self._session_changed(sid)


def _subs(*interests: _Interest | None) -> list[Subscriber]:
    out: set[Subscriber] = set()
    for interest in interests:
        if interest is not None:
            out |= interest.subs
    return list(out)


def _call(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - one bad subscriber must not stop the others
        log.exception("cluster event subscriber failed")


def _discard(index: dict[str, _Interest], key: str, sub: Subscriber) -> None:
    interest = index.get(key)
    if interest is not None:
        interest.subs.discard(sub)
        if not interest.subs:
            del index[key]
