"""The only code that talks to the database: keyword-only async methods, one per question the
product asks (templates, sessions, executions and their events), over ``engine.Database``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from server.events import EventTuple
from server.store import notices, reconcile, schema
from server.store.engine import INLINE_MAX_EVENTS, Database, dumps
from server.store.reconcile import INTERRUPTED_EXECUTION, INTERRUPTED_SESSION
from server.store.schema import SchemaTooNew

__all__ = ["INTERRUPTED_EXECUTION", "INTERRUPTED_SESSION", "SchemaTooNew", "Store"]

_EXECUTION_COLUMNS = (
    "id, session_id, kind, input, path, args, env, status, started_at, ended_at, result, error, metrics"
)


@dataclass(frozen=True)
class _Child:
    """A kind of row a template owns: how failures name one, what is read back and in what order."""

    noun: str
    read_columns: tuple[str, ...]  # inserts write these plus created_at
    order: str


_TEMPLATE_CHILDREN = {
    "capabilities": _Child(
        "capability", ("id", "vm_id", "kind", "name", "enabled", "config"), "created_at, id"
    ),
    "startup_files": _Child(
        "startup file",
        ("id", "vm_id", "path", "order_index", "mode"),
        "order_index, created_at, id",
    ),
}


class Store(Database):
    """The product's queries (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        p = "?" if self.is_sqlite else "%s"
        self._sql_insert_events = (
            f"INSERT INTO events (id, execution_id, seq, ts, type, payload) VALUES ({', '.join([p] * 6)})"
        )
        self._sql_insert_execution = (
            f"INSERT INTO executions ({_EXECUTION_COLUMNS}) VALUES ({', '.join([p] * 13)})"
        )
        self._sql_finalize = (
            f"UPDATE executions SET status={p}, ended_at={p}, result={p}, error={p}, metrics={p} "
            f"WHERE id={p} AND status='running'"  # an execution ends once (a reaper may have ended it)
        )

    # ---------------------------------------------------------------- templates

    async def create_template(self, *, template: dict[str, Any], settings: dict[str, Any]) -> None:
        def fn(conn: Connection) -> None:
            conn.execute(
                text(
                    "INSERT INTO templates (id, name, engine, is_active, exposed_modules, "
                    "libraries, created_at, updated_at) VALUES (:id, :name, :engine, "
                    ":is_active, :exposed_modules, :libraries, :created_at, :updated_at)"
                ),
                {
                    **template,
                    "exposed_modules": dumps(template["exposed_modules"]),
                    "libraries": dumps(template["libraries"]),
                },
            )
            conn.execute(
                text(
                    "INSERT INTO template_settings (vm_id, limits, resolver, runtime) "
                    "VALUES (:vm_id, :limits, :resolver, :runtime)"
                ),
                {
                    "vm_id": template["id"],
                    "limits": dumps(settings["limits"]),
                    "resolver": dumps(settings["resolver"]),
                    "runtime": dumps(settings["runtime"]),
                },
            )

        await self.write(fn, operation="create template")

    async def list_templates(self) -> list[dict[str, Any]]:
        return await self.read(
            lambda c: self._all(c, "templates", "SELECT * FROM templates ORDER BY created_at DESC, id DESC"),
            operation="list templates",
        )

    async def get_template(self, *, template_id: str) -> dict[str, Any] | None:
        return await self.read(
            lambda c: self._one(c, "templates", "SELECT * FROM templates WHERE id=:id", id=template_id),
            operation="read template",
        )

    async def get_template_bundle(self, *, template_id: str) -> dict[str, Any] | None:
        """Template, settings, capabilities and startup files in one read."""

        def fn(conn: Connection) -> dict[str, Any] | None:
            tpl = self._one(conn, "templates", "SELECT * FROM templates WHERE id=:id", id=template_id)
            if tpl is None:
                return None
            settings = self._one(
                conn,
                "template_settings",
                "SELECT * FROM template_settings WHERE vm_id=:id",
                id=template_id,
            )
            return {
                "template": tpl,
                "settings": settings,
                "capabilities": self._children(conn, "capabilities", template_id),
                "startup_files": self._children(conn, "startup_files", template_id),
            }

        return await self.read(fn, operation="read template")

    def _children(self, conn: Connection, table: str, template_id: str) -> list[dict[str, Any]]:
        child = _TEMPLATE_CHILDREN[table]
        return self._all(
            conn,
            table,
            f"SELECT {', '.join(child.read_columns)} FROM {table} WHERE vm_id=:id ORDER BY {child.order}",
            id=template_id,
        )

    async def _add_child(self, table: str, row: dict[str, Any]) -> None:
        child = _TEMPLATE_CHILDREN[table]
        columns = (*child.read_columns, "created_at")
        sql = text(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
        )
        await self.write(lambda c: c.execute(sql, row), operation=f"create {child.noun}")

    async def _list_children(self, table: str, template_id: str) -> list[dict[str, Any]]:
        return await self.read(
            lambda c: self._children(c, table, template_id),
            operation=f"list {table.replace('_', ' ')}",
        )

    async def _delete_child(self, table: str, *, template_id: str, child_id: str) -> bool:
        sql = text(f"DELETE FROM {table} WHERE id=:id AND vm_id=:vm")
        return await self.write(
            lambda c: bool(c.execute(sql, {"id": child_id, "vm": template_id}).rowcount),
            operation=f"delete {_TEMPLATE_CHILDREN[table].noun}",
        )

    async def update_template(
        self,
        *,
        template_id: str,
        mutate: Callable[[dict[str, Any], dict[str, Any]], None],
        updated_at: str,
    ) -> bool:
        """Read template+settings, let ``mutate(template, settings)`` edit them, write back.

        One transaction on the writer thread, so concurrent edits cannot lose updates.
        Returns False when the template does not exist.
        """

        def fn(conn: Connection) -> bool:
            tpl = self._one(conn, "templates", "SELECT * FROM templates WHERE id=:id", id=template_id)
            if tpl is None:
                return False
            settings = self._one(
                conn,
                "template_settings",
                "SELECT * FROM template_settings WHERE vm_id=:id",
                id=template_id,
            )
            assert settings is not None
            mutate(tpl, settings)
            conn.execute(
                text(
                    "UPDATE templates SET name=:name, is_active=:is_active, "
                    "exposed_modules=:m, libraries=:l, updated_at=:u WHERE id=:id"
                ),
                {
                    "name": tpl["name"],
                    "is_active": tpl["is_active"],
                    "m": dumps(tpl["exposed_modules"]),
                    "l": dumps(tpl["libraries"]),
                    "u": updated_at,
                    "id": template_id,
                },
            )
            conn.execute(
                text(
                    "UPDATE template_settings SET limits=:limits, resolver=:resolver, "
                    "runtime=:runtime WHERE vm_id=:id"
                ),
                {
                    "limits": dumps(settings["limits"]),
                    "resolver": dumps(settings["resolver"]),
                    "runtime": dumps(settings["runtime"]),
                    "id": template_id,
                },
            )
            return True

        return await self.write(fn, operation="update template")

    async def delete_template(self, *, template_id: str) -> bool:
        def fn(conn: Connection) -> bool:
            # Explicit child deletes keep PostgreSQL and SQLite behaviour identical even on a
            # database created without ON DELETE CASCADE.
            for table in ("capabilities", "startup_files", "template_settings"):
                conn.execute(text(f"DELETE FROM {table} WHERE vm_id=:id"), {"id": template_id})
            res = conn.execute(text("DELETE FROM templates WHERE id=:id"), {"id": template_id})
            return bool(res.rowcount)

        return await self.write(fn, operation="delete template")

    async def add_capability(self, *, row: dict[str, Any]) -> None:
        await self._add_child("capabilities", {**row, "config": dumps(row["config"])})

    async def list_capabilities(self, *, template_id: str) -> list[dict[str, Any]]:
        return await self._list_children("capabilities", template_id)

    async def delete_capability(self, *, template_id: str, capability_id: str) -> bool:
        return await self._delete_child("capabilities", template_id=template_id, child_id=capability_id)

    async def add_startup_file(self, *, row: dict[str, Any]) -> None:
        await self._add_child("startup_files", row)

    async def list_startup_files(self, *, template_id: str) -> list[dict[str, Any]]:
        return await self._list_children("startup_files", template_id)

    async def delete_startup_file(self, *, template_id: str, startup_file_id: str) -> bool:
        return await self._delete_child("startup_files", template_id=template_id, child_id=startup_file_id)

    # ---------------------------------------------------------------- sessions

    async def create_session(self, *, row: dict[str, Any]) -> None:
        await self.write(
            lambda c: c.execute(
                text(
                    "INSERT INTO sessions (id, vm_id, workspace_id, base_commit_oid, "
                    "worktree_path, status, created_at, closed_at, last_error, runtime_meta, node_id) "
                    "VALUES (:id, :vm_id, :workspace_id, :base_commit_oid, :worktree_path, "
                    ":status, :created_at, :closed_at, :last_error, :runtime_meta, :node_id)"
                ),
                {**row, "runtime_meta": dumps(row["runtime_meta"]), "node_id": row.get("node_id")},
            ),
            operation="create session",
        )

    async def update_session(self, *, session_id: str, **fields: Any) -> None:
        if "runtime_meta" in fields:
            fields["runtime_meta"] = dumps(fields["runtime_meta"])
        assigns = ", ".join(f"{k}=:{k}" for k in fields)

        def fn(conn: Connection) -> None:
            conn.execute(text(f"UPDATE sessions SET {assigns} WHERE id=:_id"), {**fields, "_id": session_id})
            self.notify_in(conn, [notices.session_entry(session_id)])

        await self.write(fn, operation="update session")

    async def get_session(self, *, session_id: str) -> dict[str, Any] | None:
        return await self.read(
            lambda c: self._one(c, "sessions", "SELECT * FROM sessions WHERE id=:id", id=session_id),
            operation="read session",
        )

    async def list_sessions(
        self, *, status: str | None = None, template_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = [], {}
        if status:
            where.append("status=:status")
            params["status"] = status
        if template_id:
            where.append("vm_id=:vm")
            params["vm"] = template_id
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        return await self.read(
            lambda c: self._all(
                c,
                "sessions",
                f"SELECT * FROM sessions {clause}ORDER BY created_at DESC, id DESC",
                **params,
            ),
            operation="list sessions",
        )

    # ---------------------------------------------------------------- executions

    async def create_execution(self, *, row: dict[str, Any], events: Sequence[EventTuple] = ()) -> None:
        """Insert a new execution row, with its first events (the input echo) in the same commit."""
        params = (
            row["id"],
            row["session_id"],
            row["kind"],
            row["input"],
            row["path"],
            dumps(row["args"]),
            dumps(row["env"]),
            row["status"],
            row["started_at"],
            None,
            None,
            None,
            dumps(row["metrics"]),
        )

        notify = self.notify_as is not None

        def fn(cur: Any) -> None:
            cur.execute(self._sql_insert_execution, params)
            if events:
                cur.executemany(self._sql_insert_events, events)
            if notify:
                start = notices.execution_entry(row["id"], row["session_id"], row["status"])
                self._notify(cur, [start, *notices.events_entries(events)])

        await self._run_write(self._raw_tx(fn), "create execution", small=True)

    async def write_batch(
        self,
        *,
        events: Sequence[EventTuple],
        finalize: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Insert a batch of events and finalize executions, all in one transaction."""
        finalize = list(finalize)
        fin = [
            (
                f["status"],
                f["ended_at"],
                None if f.get("result") is None else dumps(f["result"]),
                None if f.get("error") is None else dumps(f["error"]),
                dumps(f["metrics"]),
                f["id"],
            )
            for f in finalize
        ]

        notify = self.notify_as is not None

        def fn(cur: Any) -> None:
            if events:
                cur.executemany(self._sql_insert_events, events)
            if fin:
                cur.executemany(self._sql_finalize, fin)
            if notify:
                self._notify(cur, notices.batch_entries(events, finalize))

        await self._run_write(
            self._raw_tx(fn),
            "store events" if events else "finalize execution",
            small=len(events) <= INLINE_MAX_EVENTS,
        )

    async def get_execution(self, *, execution_id: str) -> dict[str, Any] | None:
        return await self.read(
            lambda c: self._one(
                c,
                "executions",
                f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE id=:id",
                id=execution_id,
            ),
            operation="read execution",
        )

    async def list_executions(
        self, *, session_id: str, limit: int, before: str | None = None
    ) -> list[dict[str, Any]] | None:
        """Newest first; with ``before`` (an execution id of the session), only older ones.
        None when ``before`` names no execution of this session."""

        def run(c: Connection) -> list[dict[str, Any]] | None:
            older, params = "", {}
            if before is not None:
                mark = c.execute(
                    text("SELECT started_at FROM executions WHERE id=:id AND session_id=:sid"),
                    {"id": before, "sid": session_id},
                ).first()
                if mark is None:
                    return None
                older = "AND (started_at < :at OR (started_at = :at AND id < :id)) "
                params = {"at": mark[0], "id": before}
            return self._all(
                c,
                "executions",
                f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE session_id=:sid {older}"
                "ORDER BY started_at DESC, id DESC LIMIT :lim",
                sid=session_id,
                lim=limit,
                **params,
            )

        return await self.read(run, operation="list executions")

    async def list_events(self, *, execution_id: str, after_seq: int, limit: int) -> list[EventTuple]:
        """Raw rows ``(id, execution_id, seq, ts, type, payload_json)``, ascending by seq."""
        return await self._event_rows(
            "execution_id=:e AND seq>:s ORDER BY seq LIMIT :l", e=execution_id, s=after_seq, l=limit
        )

    async def list_session_events(self, *, session_id: str, after_id: int, limit: int) -> list[EventTuple]:
        return await self._event_rows(
            "execution_id IN (SELECT id FROM executions WHERE session_id=:s) AND id>:a ORDER BY id LIMIT :l",
            s=session_id,
            a=after_id,
            l=limit,
        )

    async def last_session_event_id(self, *, session_id: str) -> int:
        """The largest event id of a session (0: none), found through each execution's last seq."""
        sql = text(
            "SELECT MAX((SELECT v.id FROM events v WHERE v.execution_id = x.id ORDER BY v.seq DESC "
            "LIMIT 1)) FROM executions x WHERE x.session_id = :s"
        )
        return await self.read(
            lambda c: int(c.execute(sql, {"s": session_id}).scalar() or 0), operation="read events"
        )

    async def _event_rows(self, where: str, **params: Any) -> list[EventTuple]:
        sql = text(f"SELECT id, execution_id, seq, ts, type, payload FROM events WHERE {where}")
        return await self.read(lambda c: [tuple(r) for r in c.execute(sql, params)], operation="read events")

    async def max_event_id(self) -> int:
        return await self.read(
            lambda c: int(c.execute(text("SELECT COALESCE(MAX(id), 0) FROM events")).scalar() or 0),
            operation="read the last event id",
        )

    async def next_id_block(self) -> int:
        """PostgreSQL: the first of ``id_block`` fresh event ids, unique across every node."""
        return await self.read(self._nextval, operation="allocate event ids")

    def next_id_block_now(self) -> int:
        """``next_id_block`` on the calling thread (when a block fetched ahead did not arrive)."""

        def fn() -> int:
            assert self._engine is not None, "store is not open"
            with self._engine.connect() as conn:
                return self._nextval(conn)

        return self._guard(fn, "allocate event ids", False)

    @staticmethod
    def _nextval(conn: Connection) -> int:
        return int(conn.execute(text(f"SELECT nextval('{schema.EVENT_ID_SEQUENCE}')")).scalar_one())

    async def count_running(self) -> int:
        return await self.read(
            lambda c: int(
                c.execute(text("SELECT COUNT(*) FROM executions WHERE status='running'")).scalar() or 0
            ),
            operation="count running executions",
        )

    async def reconcile_on_startup(self, *, now: str, node_id: str | None = None) -> tuple[int, int]:
        """Close sessions and end executions that a previous process left live.

        Without ``node_id`` every such row (SQLite: one server); with it, that node's rows and
        the ones written before clusters (no node): never another node's.
        """
        where, params = "1=1", {}
        if node_id is not None:
            where, params = "node_id=:node OR node_id IS NULL", {"node": node_id}

        def fn(conn: Connection) -> tuple[int, int]:
            ended, _ = reconcile.interrupt_executions(
                conn, where=where, params=params, now=now, message=INTERRUPTED_EXECUTION
            )
            closed = reconcile.end_sessions(
                conn,
                where=where,
                params=params,
                status="closed",
                fields={"closed_at": now, "last_error": INTERRUPTED_SESSION},
            )
            self.notify_in(conn, reconcile.change_entries(ended, closed))
            return len(closed), len(ended)

        return await self.write(fn, operation="reconcile state left by a previous run")
