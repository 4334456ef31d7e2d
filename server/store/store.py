"""The only code that talks to the database: keyword-only async methods over SQLAlchemy.

Writes are serialised on one writer thread (one transaction per call, events in batches);
reads run on a small pool of reader threads so they never wait behind a large event batch.
Rows come back as plain dicts with JSON columns decoded and the public field names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from server.errors import StoreConflict, StoreError
from server.events import EventTuple
from server.store import notices, reconcile, schema
from server.store.reconcile import INTERRUPTED_EXECUTION, INTERRUPTED_SESSION
from server.store.schema import SchemaTooNew

__all__ = ["INTERRUPTED_EXECUTION", "INTERRUPTED_SESSION", "SchemaTooNew", "Store"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_JSON_COLUMNS = {
    "templates": ("exposed_modules", "libraries"),
    "template_settings": ("limits", "resolver", "runtime"),
    "capabilities": ("config",),
    "sessions": ("runtime_meta",),
    "executions": ("args", "env", "result", "error", "metrics"),
}
INLINE_MAX_EVENTS = 64  # event batches up to this size may be committed on the event loop

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


def _is_unique_violation(orig: BaseException | None) -> bool:
    """Unique-key clashes are conflicts; foreign-key and other integrity errors are failures."""
    if getattr(orig, "sqlstate", None) == "23505":  # PostgreSQL unique_violation
        return True
    return "UNIQUE constraint failed" in str(orig)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _row(table: str, mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for col in _JSON_COLUMNS.get(table, ()):
        if col in row and row[col] is not None:
            row[col] = orjson.loads(row[col])
    return row


WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a WAL file keeps after a reset (journal_size_limit)
TRUNCATE_WAIT_MS = 100  # how long a truncating checkpoint waits for a reader to finish


class Store:
    """Async facade over one SQLAlchemy engine (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._engine: Engine | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")
        # PostgreSQL: the cluster's own statements (heartbeats, reaping) beside the event writer.
        self._control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-control")
        self._writer_conn: Connection | None = None
        # Serialises use of the writer connection between the writer thread and inline writes.
        self._write_lock = threading.Lock()
        # SQLAlchemy's and, once the engine exists, the driver's own (raw hot-path cursor).
        self._integrity_errors: tuple[type[Exception], ...] = (IntegrityError,)
        self._queued_writes = 0  # writes handed to the writer thread and not finished yet
        self.last_bulk_write = 0.0  # monotonic time of the last write sent to the writer thread
        self.last_write = 0.0  # monotonic time of the last write of any size
        # PostgreSQL: the NOTIFY channel of this database schema and the event-id block size
        # (read at open); ``notify_as`` (this node's id) turns change notices on (API.md §14).
        self.channel = ""
        self.id_block = 0
        self.notify_as: str | None = None
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

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        await self._run_write(self._open_sync, "open the database")

    def _open_sync(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 4
        engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=10000")
                # A larger page cache keeps the event indexes in memory as the table grows.
                cur.execute("PRAGMA cache_size=-65536")
                # A log reset after a checkpoint also gives the file's space back (store/wal.py).
                cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                cur.close()

        self._engine = engine
        if engine.dialect.dbapi is not None:
            self._integrity_errors = (IntegrityError, engine.dialect.dbapi.IntegrityError)
        schema.setup(engine)
        if not self.is_sqlite:
            with engine.connect() as conn:
                # LISTEN/NOTIFY channels are per database: name ours after the schema, so that
                # servers on other schemas of the same database never hear each other.
                current = conn.execute(text("SELECT current_schema()")).scalar() or "public"
                self.channel = "vm_system" if current == "public" else f"vm_system_{current}"[:63]
                self.id_block = int(
                    conn.execute(
                        text(
                            "SELECT increment_by FROM pg_sequences WHERE sequencename = :n "
                            "AND schemaname = current_schema()"
                        ),
                        {"n": schema.EVENT_ID_SEQUENCE},
                    ).scalar()
                    or schema.ID_BLOCK
                )
        self._writer_conn = engine.connect()
        if self.is_sqlite:
            # Checkpoints run from a background task instead of stalling a commit.
            self._writer_conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
            self._writer_conn.commit()

    async def close(self) -> None:
        def _close() -> None:
            if self._writer_conn is not None:
                self._writer_conn.close()
                self._writer_conn = None
            if self._engine is not None:
                self._engine.dispose()

        try:
            await self._run_write(_close, "close the database")
        finally:
            self._writer.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            self._control.shutdown(wait=True)

    async def ping(self) -> bool:
        try:
            await self._run_read(lambda c: c.execute(text("SELECT 1")).scalar(), "ping")
            return True
        except StoreError:
            return False

    @property
    def sqlite_path(self) -> str | None:
        """The database file (SQLite; None for PostgreSQL or an in-memory database)."""
        if not self.is_sqlite or not self.url.startswith("sqlite:///"):
            return None
        path = self.url.split("sqlite:///", 1)[1].split("?", 1)[0]
        return None if path in ("", ":memory:") else path

    def wal_bytes(self) -> int:
        """Size of the SQLite write-ahead log (0 when there is none)."""
        path = self.url.split("sqlite:///", 1)[-1] + "-wal"
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    async def checkpoint(self) -> None:
        """Fold the SQLite WAL back into the main file (no-op on PostgreSQL).

        Runs on a reader connection: a PASSIVE checkpoint proceeds alongside the writer instead
        of holding up the next event batch.
        """
        if self.is_sqlite:
            await self._run_read(
                lambda c: c.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall(),
                "checkpoint the write-ahead log",
            )

    async def truncate_wal(self) -> bool:
        """Checkpoint the whole SQLite WAL into the database and truncate it to zero bytes.

        Runs on the writer thread, between writes, so no commit races it and it completes
        unless a reader is still on an old snapshot; it waits for such a reader for at most
        ``TRUNCATE_WAIT_MS`` (so it never stalls the writes queued behind it for long) and then
        gives up until next time. True when the log was truncated.
        """
        if not self.is_sqlite:
            return False

        def run() -> bool:
            conn = self._wc()
            conn.exec_driver_sql(f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
            try:
                row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.exec_driver_sql("PRAGMA busy_timeout=10000")
                conn.rollback()  # end SQLAlchemy's autobegun transaction: the next write begins its own
            return row is not None and not row[0]  # (busy, log frames, checkpointed frames)

        return await self._run_write(run, "truncate the write-ahead log")

    # ---------------------------------------------------------------- plumbing

    def _wc(self) -> Connection:
        assert self._writer_conn is not None, "store is not open"
        return self._writer_conn

    async def _run_write(self, fn: Callable[[], T], operation: str, *, small: bool = False) -> T:
        """Run a write on the writer connection, in commit order.

        On SQLite a *small* write (an execution row, a handful of events) runs right here on
        the event loop when no other write is queued or running: a WAL commit without fsync
        costs tens of microseconds, less than the two thread hand-offs it would otherwise need.
        Anything else goes to the writer thread, behind what is already queued, so commits
        always happen in submission order (event ids are committed in increasing order).
        """
        self.last_write = time.monotonic()
        if small and self.is_sqlite and self._queued_writes == 0:
            if self._write_lock.acquire(blocking=False):
                try:
                    return self._guard(fn, operation, True)
                finally:
                    self._write_lock.release()
        loop = asyncio.get_running_loop()
        self._queued_writes += 1
        self.last_bulk_write = time.monotonic()
        try:
            return await loop.run_in_executor(self._writer, self._locked, fn, operation)
        finally:
            self._queued_writes -= 1

    def _locked(self, fn: Callable[[], T], operation: str) -> T:
        with self._write_lock:
            return self._guard(fn, operation, True)

    async def _run_read(self, fn: Callable[[Connection], T], operation: str) -> T:
        def _read() -> T:
            assert self._engine is not None, "store is not open"
            with self._engine.connect() as conn:
                return fn(conn)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._guard, _read, operation, False)

    def _guard(self, fn: Callable[[], T], operation: str, on_writer: bool) -> T:
        # Only the writer thread may touch the writer connection: a failed read must never roll
        # back a write transaction that is in progress on the other thread.
        try:
            return fn()
        except SchemaTooNew:
            raise
        except self._integrity_errors as exc:
            if on_writer:
                self._rollback()
            orig = exc.orig if isinstance(exc, IntegrityError) else exc
            if _is_unique_violation(orig):
                raise StoreConflict(str(orig)) from exc
            log.error("store operation failed: %s: %s", operation, exc)
            raise StoreError(operation) from exc
        except Exception as exc:  # noqa: BLE001 - driver errors of any kind name the operation
            if on_writer:
                self._rollback()
            log.error("store operation failed: %s: %s", operation, exc)
            raise StoreError(operation) from exc

    def _rollback(self) -> None:
        conn = self._writer_conn
        if conn is not None and conn.in_transaction():
            try:
                conn.rollback()
            except SQLAlchemyError:
                log.exception("rollback failed")

    def _raw_tx(self, fn: Callable[[Any], T]) -> Callable[[], T]:
        """One transaction on the writer's DBAPI cursor, for the hot paths.

        SQLAlchemy's per-statement machinery costs more than the SQLite statement itself for
        an execution row or a handful of events; the driver's cursor does not. SQLAlchemy has no
        transaction open on this connection between calls, so the two never interleave.
        """

        pipelined = not self.is_sqlite

        def run() -> T:
            conn = self._wc()
            dbapi = conn.connection.dbapi_connection  # reconnects after an invalidation
            assert dbapi is not None
            cur = dbapi.cursor()
            try:
                if pipelined:
                    # PostgreSQL: the statements, the change notices and the commit go out
                    # together and their answers come back together (psycopg's pipeline mode):
                    # one round trip per transaction instead of one per statement.
                    with dbapi.pipeline():
                        out = fn(cur)
                        dbapi.commit()
                else:
                    out = fn(cur)
                    dbapi.commit()
                return out
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    dbapi.rollback()
                lost = isinstance(exc, Exception) and conn.dialect.is_disconnect(
                    exc,  # type: ignore[arg-type]
                    dbapi,
                    cur,
                )
                if lost:
                    conn.invalidate()  # the next call gets a fresh connection from the pool
                raise
            finally:
                with contextlib.suppress(Exception):
                    cur.close()

        return run

    def _tx(self, fn: Callable[[Connection], T]) -> Callable[[], T]:
        def run() -> T:
            conn = self._wc()
            with conn.begin():
                return fn(conn)

        return run

    def _notify(self, cur: Any, entries: Sequence[str]) -> None:
        """Change notices for the other nodes, sent by PostgreSQL when this transaction commits."""
        assert self.notify_as is not None
        for payload in notices.payloads(self.notify_as, entries):
            cur.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def notify_in(self, conn: Connection, entries: Sequence[str]) -> None:
        """``_notify`` inside a SQLAlchemy transaction (no-op unless notices are on)."""
        if self.notify_as is not None and entries:
            for payload in notices.payloads(self.notify_as, entries):
                conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": self.channel, "p": payload})

    async def write(self, fn: Callable[[Connection], T], *, operation: str) -> T:
        """Run ``fn(conn)`` in one transaction on the writer thread."""
        return await self._run_write(self._tx(fn), operation)

    async def transaction(self, fn: Callable[[Connection], T], *, operation: str) -> T:
        """``fn(conn)`` in one transaction of its own. On PostgreSQL it runs on a pooled
        connection beside the writer, so that a heartbeat never waits behind an event batch; on
        SQLite on the writer (one writer per file)."""
        if self.is_sqlite:
            return await self.write(fn, operation=operation)

        def run() -> T:
            assert self._engine is not None, "store is not open"
            with self._engine.begin() as conn:
                return fn(conn)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._control, self._guard, run, operation, False)

    async def read(self, fn: Callable[[Connection], T], *, operation: str) -> T:
        return await self._run_read(fn, operation)

    @staticmethod
    def _all(conn: Connection, table: str, sql: str, **params: Any) -> list[dict[str, Any]]:
        return [_row(table, m) for m in conn.execute(text(sql), params).mappings()]

    @staticmethod
    def _one(conn: Connection, table: str, sql: str, **params: Any) -> dict[str, Any] | None:
        m = conn.execute(text(sql), params).mappings().first()
        return None if m is None else _row(table, m)

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
                    "exposed_modules": _dumps(template["exposed_modules"]),
                    "libraries": _dumps(template["libraries"]),
                },
            )
            conn.execute(
                text(
                    "INSERT INTO template_settings (vm_id, limits, resolver, runtime) "
                    "VALUES (:vm_id, :limits, :resolver, :runtime)"
                ),
                {
                    "vm_id": template["id"],
                    "limits": _dumps(settings["limits"]),
                    "resolver": _dumps(settings["resolver"]),
                    "runtime": _dumps(settings["runtime"]),
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
                    "m": _dumps(tpl["exposed_modules"]),
                    "l": _dumps(tpl["libraries"]),
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
                    "limits": _dumps(settings["limits"]),
                    "resolver": _dumps(settings["resolver"]),
                    "runtime": _dumps(settings["runtime"]),
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
        await self._add_child("capabilities", {**row, "config": _dumps(row["config"])})

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
                {**row, "runtime_meta": _dumps(row["runtime_meta"]), "node_id": row.get("node_id")},
            ),
            operation="create session",
        )

    async def update_session(self, *, session_id: str, **fields: Any) -> None:
        if "runtime_meta" in fields:
            fields["runtime_meta"] = _dumps(fields["runtime_meta"])
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
            _dumps(row["args"]),
            _dumps(row["env"]),
            row["status"],
            row["started_at"],
            None,
            None,
            None,
            _dumps(row["metrics"]),
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
                None if f.get("result") is None else _dumps(f["result"]),
                None if f.get("error") is None else _dumps(f["error"]),
                _dumps(f["metrics"]),
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

    async def list_executions(self, *, session_id: str, limit: int) -> list[dict[str, Any]]:
        return await self.read(
            lambda c: self._all(
                c,
                "executions",
                f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE session_id=:sid "
                "ORDER BY started_at DESC, id DESC LIMIT :lim",
                sid=session_id,
                lim=limit,
            ),
            operation="list executions",
        )

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
