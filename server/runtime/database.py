"""The `database` native module: one SQLite database per session, a file in the worktree or in memory.

The database may never reach another file: ATTACH and DETACH are refused by an authorizer
(VACUUM INTO is an ATTACH of its target, so it is refused too), extension loading is off, at
most the one attached database VACUUM uses internally is allowed, and temporary tables stay in
memory (a confined worker may not write the system's temporary directories). The worker's
Landlock ruleset stops anything these checks would miss.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from server.runtime.hostcalls import JsError, js_type, type_error

DRIVERS = ("sqlite3", "sqlite")
_MEMORY = ":memory:"

# Options a DSN may carry. SQLite's own URI parameters are passed through; the Go driver's
# (mattn/go-sqlite3) underscore options become the pragmas they stand for. Anything else, such
# as `vfs` or `modeof` (which name other files or code), is refused.
_URI_OPTIONS: dict[str, tuple[str, ...]] = {
    "mode": ("ro", "rw", "rwc", "memory"),
    "cache": ("shared", "private"),
    "immutable": ("0", "1"),
}
_BOOL = ("0", "1", "true", "false", "on", "off", "yes", "no")
_PRAGMA_OPTIONS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "_foreign_keys": ("foreign_keys", _BOOL),
    "_fk": ("foreign_keys", _BOOL),
    "_busy_timeout": ("busy_timeout", None),  # milliseconds
    "_timeout": ("busy_timeout", None),
    "_journal_mode": ("journal_mode", ("delete", "truncate", "persist", "memory", "wal", "off")),
    "_journal": ("journal_mode", ("delete", "truncate", "persist", "memory", "wal", "off")),
    "_synchronous": ("synchronous", ("0", "1", "2", "3", "off", "normal", "full", "extra")),
    "_sync": ("synchronous", ("0", "1", "2", "3", "off", "normal", "full", "extra")),
}
_REFUSED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
_REFUSED_PRAGMAS = frozenset({"temp_store_directory", "data_store_directory"})


class Database:
    """`require('database')`: configure, query, exec, close for one session."""

    def __init__(self, resolve: Callable[[Any, str], str], deadline: Callable[[], float | None]) -> None:
        self._resolve = resolve  # worktree-relative path -> checked absolute path
        self._deadline = deadline
        self._conn: sqlite3.Connection | None = None
        self._denied: str | None = None  # what the authorizer last refused, for the message
        self._opened: tuple[str, bool, list[tuple[str, str]]] | None = None  # for after_fork

    # -- configure --------------------------------------------------------------------------

    def configure(self, *args: Any) -> None:
        """`configure(path)` or the Go original's `configure(driver, dsn)`."""
        if len(args) >= 2 and args[1] is not None:
            driver, dsn = args[0], args[1]
            if not isinstance(driver, str) or driver.strip().lower() not in DRIVERS:
                raise JsError(
                    f"database.configure: driver {driver!r} is not supported; use 'sqlite3' "
                    f"(a SQLite file inside the worktree, or ':memory:')"
                )
            if not isinstance(dsn, str):
                raise type_error(f"database.configure: the DSN must be a string, got {js_type(dsn)}")
            target, uri, pragmas = self._parse_dsn(dsn)
            shown: Any = dsn
        else:
            path = args[0] if args else None
            if path == _MEMORY:
                target, uri, pragmas = _MEMORY, False, []
            else:
                target, uri, pragmas = self._file_target(path), False, []
            shown = path
        self.close()
        try:
            conn = self._open(target, uri, pragmas)
        except sqlite3.Error as exc:
            raise JsError(f"database.configure: cannot open {shown!r}: {exc}") from exc
        self._conn = conn
        self._opened = (target, uri, pragmas)

    def _open(self, target: str, uri: bool, pragmas: list[tuple[str, str]]) -> sqlite3.Connection:
        # Autocommit: each exec() is durable at once, as with Go's database/sql.
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=uri)
        self._harden(conn)
        for name, value in pragmas:
            conn.execute(f"PRAGMA {name} = {value}")
        return conn

    def after_fork(self, root: str) -> None:
        """In a forked session's worker: stop sharing the parent's connection.

        An in-memory database is part of the copied memory and stays; a file database is opened
        again (a SQLite connection must not be used by two processes), unless it lies outside
        the fork's worktree (``root``), which may be narrower than the parent's.
        """
        opened, conn = self._opened, self._conn
        if conn is None or opened is None or opened[0] == _MEMORY:
            return
        self._conn = None  # the parent keeps using its handle: never close it from here
        self._opened = None
        target = opened[0]
        if target.startswith("file:") or target == root or target.startswith(root + os.sep):
            with contextlib.suppress(sqlite3.Error):
                self._conn = self._open(*opened)
                self._opened = opened

    def _file_target(self, path: Any) -> str:
        target = self._resolve(path, "path")
        if os.path.isdir(target):
            raise JsError(
                f"database.configure: {path!r} is a directory; pass a SQLite file path "
                f"inside the worktree or ':memory:'"
            )
        return target

    def _parse_dsn(self, dsn: str) -> tuple[str, bool, list[tuple[str, str]]]:
        """A DSN → (what to connect to, whether it is a URI, pragmas to run)."""
        body = dsn[5:] if dsn.startswith("file:") else dsn
        raw_path, _, query = body.partition("?")
        if dsn.startswith("file:"):
            if raw_path.startswith("//"):
                raise JsError(
                    f"database.configure: {dsn!r} names an absolute file; use a path relative "
                    f"to the worktree, e.g. 'file:data.db?mode=ro'"
                )
            raw_path = urllib.parse.unquote(raw_path)
        uri_opts: dict[str, str] = {}
        pragmas: list[tuple[str, str]] = []
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            low = value.strip().lower()
            if key in _URI_OPTIONS:
                if low not in _URI_OPTIONS[key]:
                    raise JsError(
                        f"database.configure: {key}={value!r} is not allowed; use one of "
                        f"{', '.join(_URI_OPTIONS[key])}"
                    )
                uri_opts[key] = low
            elif key in _PRAGMA_OPTIONS:
                pragma, choices = _PRAGMA_OPTIONS[key]
                if (choices is None and not low.isdigit()) or (choices is not None and low not in choices):
                    expected = "a number of milliseconds" if choices is None else ", ".join(choices)
                    raise JsError(f"database.configure: {key}={value!r} is not valid; use {expected}")
                pragmas.append((pragma, low))
            else:
                allowed = ", ".join([*_URI_OPTIONS, *_PRAGMA_OPTIONS])
                raise JsError(f"database.configure: DSN option {key!r} is not supported; allowed: {allowed}")
        if raw_path in ("", _MEMORY) or uri_opts.get("mode") == "memory":
            uri_opts.pop("mode", None)
            if not uri_opts:
                return _MEMORY, False, pragmas
            return "file::memory:?" + urllib.parse.urlencode(uri_opts), True, pragmas
        target = self._file_target(raw_path)
        if not uri_opts:
            return target, False, pragmas
        return f"file:{urllib.parse.quote(target)}?{urllib.parse.urlencode(uri_opts)}", True, pragmas

    def _harden(self, conn: sqlite3.Connection) -> None:
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        # VACUUM attaches one temporary database of its own (filename ''); nothing else may.
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 1)
        conn.set_authorizer(self._authorize)
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.set_progress_handler(self._should_interrupt, 10_000)

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, _db: Any, _trigger: Any) -> int:
        if action == sqlite3.SQLITE_ATTACH and arg1:
            self._denied = "ATTACH (and VACUUM INTO, which attaches its target)"
        elif action == sqlite3.SQLITE_DETACH:
            self._denied = "DETACH"
        elif action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _REFUSED_FUNCTIONS:
            self._denied = f"the function {arg2}()"
        elif action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _REFUSED_PRAGMAS:
            self._denied = f"PRAGMA {arg1}"
        else:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    def _should_interrupt(self) -> int:
        limit = self._deadline()
        return 1 if limit is not None and time.monotonic() >= limit else 0

    # -- statements -------------------------------------------------------------------------

    def _connection(self, function: str) -> sqlite3.Connection:
        if self._conn is None:
            raise JsError(
                f"database.{function}: no database is configured; call "
                f"database.configure('file.db') or database.configure(':memory:') first"
            )
        self._denied = None
        return self._conn

    def query(self, sql: Any = None, *params: Any) -> list[dict[str, Any]]:
        conn = self._connection("query")
        _check_sql("query", sql)
        try:
            cur = conn.execute(sql, _sql_params("query", params))
            rows = cur.fetchall()
            columns = [d[0] for d in cur.description or ()]
        except sqlite3.Error as exc:
            raise self._error("query", exc) from exc
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def exec(self, sql: Any = None, *params: Any) -> dict[str, int]:
        conn = self._connection("exec")
        _check_sql("exec", sql)
        bound = _sql_params("exec", params)
        before = conn.total_changes
        try:
            try:
                cur = conn.execute(sql, bound)
                affected = cur.rowcount
                last_id = cur.lastrowid
            except sqlite3.ProgrammingError as exc:
                # Several statements in one string (a schema, say) are allowed without params.
                if bound or "one statement at a time" not in str(exc):
                    raise
                conn.executescript(sql)
                affected = conn.total_changes - before
                last_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._error("exec", exc) from exc
        return {"rowsAffected": max(affected, 0), "lastInsertId": last_id or 0}

    def close(self, *_: Any) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                self._opened = None

    def _error(self, function: str, exc: sqlite3.Error) -> JsError:
        if isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted":
            return JsError(f"database.{function}: interrupted because the execution's time limit was reached")
        if self._denied is not None:  # "not authorized" or "authorization denied"
            return JsError(
                f"database.{function}: {self._denied} is not allowed: a session's database is "
                f"one SQLite file inside its worktree (or in memory), and it reaches no other file"
            )
        return JsError(f"database.{function} failed: {exc}")


def _check_sql(function: str, sql: Any) -> None:
    if not isinstance(sql, str) or not sql.strip():
        raise type_error(f"database.{function}: the first argument must be a SQL string, got {js_type(sql)}")


def _sql_params(function: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
    for index, value in enumerate(params, start=1):
        if value is not None and not isinstance(value, str | int | float | bool):
            raise type_error(
                f"database.{function}: parameter {index} is {js_type(value)}; bind only "
                f"strings, numbers, booleans or null (JSON.stringify objects yourself)"
            )
    return params
