"""The database underneath the store: one SQLAlchemy engine, its threads and transactions.

Writes are serialised on one writer thread (one transaction per call, events in batches);
reads run on a small pool of reader threads so they never wait behind a large event batch.
Rows come back as plain dicts with JSON columns decoded. ``server.store.store.Store`` builds
the product's queries on top of this; nothing here knows a template from an execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from server.errors import StoreConflict, StoreError
from server.store import notices, schema
from server.store.schema import SchemaTooNew

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


def _is_unique_violation(orig: BaseException | None) -> bool:
    """Unique-key clashes are conflicts; foreign-key and other integrity errors are failures."""
    if getattr(orig, "sqlstate", None) == "23505":  # PostgreSQL unique_violation
        return True
    return "UNIQUE constraint failed" in str(orig)


def dumps(value: Any) -> str:
    """A JSON column's text."""
    return orjson.dumps(value).decode()


def _row(table: str, mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for col in _JSON_COLUMNS.get(table, ()):
        if col in row and row[col] is not None:
            row[col] = orjson.loads(row[col])
    return row


WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a WAL file keeps after a reset (journal_size_limit)
TRUNCATE_WAIT_MS = 100  # how long a truncating checkpoint waits for a reader to finish


class Database:
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
