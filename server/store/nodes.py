"""The SQL of the cluster (API.md §14): the nodes table, heartbeats, reaping lost nodes, owners.

Every change of state is one conditional statement, so that PostgreSQL decides races: a
heartbeat only lands while the row is this process's and ``up``; declaring a node lost is one
``UPDATE ... WHERE status = 'up' AND heartbeat_at < now - timeout``, so exactly one reaper wins
it, and in the same transaction that reaper crashes the node's sessions, interrupts its
executions (each with a closing ``system`` event) and queues the change notices. Time comes from
the database's clock on PostgreSQL (nodes' clocks may differ), from this process on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from server.clock import now_iso
from server.store import notices, reconcile, schema
from server.store.store import Store

_PG_NOW = "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
_PG_BEFORE = (
    "to_char((clock_timestamp() - make_interval(secs => :timeout)) AT TIME ZONE 'UTC', "
    '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\')'
)
_NODE_COLUMNS = "id, url, status, started_at, heartbeat_at, version, max_sessions"


def lost_message(node_id: str) -> str:
    return f"node {node_id} was lost: runtime state does not survive a node failure"


@dataclass(frozen=True)
class Owner:
    """Where a session lives, as stored: its status, its node and that node's address and state."""

    session_id: str
    session_status: str
    node_id: str | None
    url: str | None
    node_status: str | None


@dataclass(frozen=True)
class Reaped:
    node_id: str
    sessions: int
    executions: int
    entries: list[str]  # the change notices sent (for this node's own subscribers)


class NodeStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._postgres = not store.is_sqlite

    def _now(self) -> tuple[str, dict[str, Any]]:
        """The SQL of "now" and its parameters."""
        if self._postgres:
            return _PG_NOW, {}
        return ":now", {"now": now_iso()}

    async def register(
        self, *, node_id: str, url: str, incarnation: str, version: str, max_sessions: int
    ) -> None:
        """This process is node ``node_id`` from now on (``up``, a fresh incarnation)."""
        now, params = self._now()
        sql = text(
            "INSERT INTO nodes (id, url, status, incarnation, started_at, heartbeat_at, version, "
            f"max_sessions) VALUES (:id, :url, 'up', :inc, {now}, {now}, :version, :max) "
            "ON CONFLICT (id) DO UPDATE SET url=excluded.url, status='up', "
            "incarnation=excluded.incarnation, started_at=excluded.started_at, "
            "heartbeat_at=excluded.heartbeat_at, version=excluded.version, "
            "max_sessions=excluded.max_sessions"
        )
        values = {"id": node_id, "url": url, "inc": incarnation, "version": version, "max": max_sessions}
        await self.store.transaction(
            lambda c: c.execute(sql, {**values, **params}), operation="register this node"
        )

    async def heartbeat(self, *, node_id: str, incarnation: str) -> str:
        """Record that this node is alive. Returns ``up``, or what happened to it instead:
        ``lost`` (another node reaped it), ``replaced`` (another process took its id), or the
        row's other status."""
        now, params = self._now()

        def fn(conn: Connection) -> str:
            done = conn.execute(
                text(
                    f"UPDATE nodes SET heartbeat_at={now} WHERE id=:id AND incarnation=:inc AND status='up'"
                ),
                {"id": node_id, "inc": incarnation, **params},
            ).rowcount
            if done:
                return "up"
            row = conn.execute(
                text("SELECT status, incarnation FROM nodes WHERE id=:id"), {"id": node_id}
            ).first()
            if row is None or row[1] != incarnation:
                return "replaced"
            return str(row[0])

        return await self.store.transaction(fn, operation="record this node's heartbeat")

    async def rejoin(self, *, node_id: str, incarnation: str) -> list[Reaped]:
        """A node that was declared lost comes back: whatever of its own is still live in the
        database is ended as the reaper would have, then it is ``up`` again."""
        now, params = self._now()

        def fn(conn: Connection) -> list[Reaped]:
            reaped = self._reap_node(conn, node_id, announce=False)
            conn.execute(
                text(
                    f"UPDATE nodes SET status='up', heartbeat_at={now}, started_at={now} "
                    "WHERE id=:id AND incarnation=:inc"
                ),
                {"id": node_id, "inc": incarnation, **params},
            )
            return [reaped]

        return await self.store.transaction(fn, operation="register this node again")

    async def reap(self, *, me: str, timeout_s: float) -> list[Reaped]:
        """Declare lost every ``up`` node silent for ``timeout_s`` (PostgreSQL), and end its
        sessions and executions; one transaction, so exactly one node does it."""
        if not self._postgres:
            return []

        def fn(conn: Connection) -> list[Reaped]:
            lost = conn.execute(
                text(
                    "UPDATE nodes SET status='lost' "
                    f"WHERE status='up' AND id <> :me AND heartbeat_at < {_PG_BEFORE} RETURNING id"
                ),
                {"me": me, "timeout": timeout_s},
            ).all()
            return [self._reap_node(conn, str(r[0])) for r in lost]

        return await self.store.transaction(fn, operation="reap lost nodes")

    def _reap_node(self, conn: Connection, node_id: str, *, announce: bool = True) -> Reaped:
        now = now_iso()
        message = lost_message(node_id)
        where, params = "node_id=:node", {"node": node_id}
        next_id = None
        if self._postgres:

            def next_id() -> int:
                # A fresh block's first id: above every id any node holds, so the closing event
                # comes after everything the lost node wrote (session cursors stay ordered).
                return int(conn.execute(text(f"SELECT nextval('{schema.EVENT_ID_SEQUENCE}')")).scalar_one())

        ended, events = reconcile.interrupt_executions(
            conn, where=where, params=params, now=now, message=message, event_id=next_id
        )
        crashed = reconcile.end_sessions(
            conn, where=where, params=params, status="crashed", fields={"last_error": message}
        )
        entries = reconcile.change_entries(ended, crashed, events)
        if announce:
            entries.insert(0, notices.node_entry(node_id, "lost"))
        self.store.notify_in(conn, entries)
        return Reaped(node_id, len(crashed), len(ended), entries)

    async def mark_stopped(self, *, node_id: str, incarnation: str) -> None:
        def fn(conn: Connection) -> None:
            done = conn.execute(
                text("UPDATE nodes SET status='stopped' WHERE id=:id AND incarnation=:inc"),
                {"id": node_id, "inc": incarnation},
            ).rowcount
            if done:
                self.store.notify_in(conn, [notices.node_entry(node_id, "stopped")])

        await self.store.transaction(fn, operation="mark this node stopped")

    async def list_nodes(self) -> list[dict[str, Any]]:
        """Every node with the number of its live (starting or ready) sessions."""
        sql = text(
            f"SELECT {_NODE_COLUMNS}, (SELECT COUNT(*) FROM sessions s WHERE s.node_id = n.id "
            "AND s.status IN ('starting', 'ready')) AS sessions FROM nodes n ORDER BY id"
        )
        return await self.store.read(
            lambda c: [dict(m) for m in c.execute(sql).mappings()], operation="list nodes"
        )

    async def session_owner(self, *, session_id: str) -> Owner | None:
        sql = text(
            "SELECT s.id, s.status, s.node_id, n.url, n.status FROM sessions s "
            "LEFT JOIN nodes n ON n.id = s.node_id WHERE s.id = :id"
        )
        row = await self.store.read(
            lambda c: c.execute(sql, {"id": session_id}).first(), operation="read session"
        )
        return None if row is None else Owner(*row)

    async def execution_owner(self, *, execution_id: str) -> tuple[str, Owner] | None:
        """A running execution's status and its session's owner (None: no such execution)."""
        sql = text(
            "SELECT x.status, s.id, s.status, s.node_id, n.url, n.status FROM executions x "
            "JOIN sessions s ON s.id = x.session_id LEFT JOIN nodes n ON n.id = s.node_id "
            "WHERE x.id = :id"
        )
        row = await self.store.read(
            lambda c: c.execute(sql, {"id": execution_id}).first(), operation="read execution"
        )
        return None if row is None else (str(row[0]), Owner(*row[1:]))
