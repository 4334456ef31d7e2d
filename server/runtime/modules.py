"""Native modules (fs, database, exec) that JavaScript reaches through the worker's host call."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModuleInfo:
    """One native module a template may enable: its name, a description and its functions."""

    name: str
    description: str
    functions: tuple[str, ...]


CATALOG: tuple[ModuleInfo, ...] = (
    ModuleInfo(
        name="fs",
        description="Read and write files inside the session's worktree.",
        functions=("readFileSync", "writeFileSync", "existsSync", "readdirSync"),
    ),
    ModuleInfo(
        name="database",
        description="Query a SQLite database file inside the worktree, or an in-memory one.",
        functions=("configure", "query", "exec", "close"),
    ),
    ModuleInfo(
        name="exec",
        description="Run a program (no shell) in the worktree and return its standard output.",
        functions=("run",),
    ),
)

_BY_NAME: dict[str, ModuleInfo] = {info.name: info for info in CATALOG}

# Names people reach for that are JavaScript globals, not modules one can enable.
BUILTIN_NAMES: frozenset[str] = frozenset(
    {"console", "math", "json", "date", "array", "string", "object", "promise"}
)


class ModuleNameError(ValueError):
    """A native module name that cannot be enabled; the message says why and what to use."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _choices() -> str:
    return ", ".join(info.name for info in CATALOG)


def catalog_json() -> list[dict[str, Any]]:
    """The catalog as served by `GET /api/v1/modules`."""
    return [
        {"name": info.name, "description": info.description, "functions": list(info.functions)}
        for info in CATALOG
    ]


def normalize_module_name(raw: str) -> str:
    """Return the catalog name for `raw` (trimmed, lower case) or raise ModuleNameError."""
    if not isinstance(raw, str) or not raw.strip():
        raise ModuleNameError(f"module name must not be empty; choose one of: {_choices()}")
    name = raw.strip().lower()
    if name in BUILTIN_NAMES:
        raise ModuleNameError(
            f"{raw.strip()!r} is a JavaScript built-in that is always available, not a native "
            f"module; choose one of: {_choices()}"
        )
    if name not in _BY_NAME:
        raise ModuleNameError(f"unknown native module {raw.strip()!r}; choose one of: {_choices()}")
    return name


def module_functions(names: Iterable[str]) -> dict[str, list[str]]:
    """Map each enabled module name to its function names (what the engine's `require` exposes)."""
    result: dict[str, list[str]] = {}
    for raw in names:
        name = normalize_module_name(raw)
        result[name] = list(_BY_NAME[name].functions)
    return result


class JsError(Exception):
    """An error to hand back to JavaScript as `{"error": {"name", "message"}}`."""

    def __init__(self, message: str, name: str = "Error") -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def _type_error(message: str) -> JsError:
    return JsError(message, "TypeError")


def _jsonable(value: Any) -> Any:
    """Make a Python value JSON-safe the way JSON.stringify would (non-finite floats → null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        # BLOBs come back as arrays of byte values, like Array.from(new Uint8Array(blob)).
        return list(bytes(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class ModuleHost:
    """Serves `require('fs'|'database'|'exec')` calls for one session, confined to its worktree.

    Runs inside the session's worker process; every call is synchronous and `call()` never
    raises, so a bug here surfaces as a JavaScript Error rather than killing the worker.
    """

    def __init__(
        self,
        worktree: str,
        enabled: Iterable[str],
        deadline: Callable[[], float | None],
    ) -> None:
        self._root = os.path.realpath(worktree)
        self._enabled = frozenset(normalize_module_name(n) for n in enabled)
        self._deadline = deadline
        self._db: sqlite3.Connection | None = None
        self._db_target: str | None = None  # what configure() opened: a path or ":memory:"
        self._handlers: dict[tuple[str, str], Callable[..., Any]] = {
            ("fs", "readFileSync"): self._fs_read,
            ("fs", "writeFileSync"): self._fs_write,
            ("fs", "existsSync"): self._fs_exists,
            ("fs", "readdirSync"): self._fs_readdir,
            ("database", "configure"): self._db_configure,
            ("database", "query"): self._db_query,
            ("database", "exec"): self._db_exec,
            ("database", "close"): self._db_close,
            ("exec", "run"): self._exec_run,
        }

    # -- dispatch -------------------------------------------------------------------------

    def call(self, module: str, function: str, args_json: str) -> str:
        """Run `module.function(...args)`; return `{"ok": value}` or `{"error": {...}}` as JSON."""
        try:
            value = self._dispatch(module, function, args_json)
            return json.dumps({"ok": _jsonable(value)}, ensure_ascii=False, allow_nan=False)
        except JsError as exc:
            return _error_json(exc.name, exc.message)
        except Exception as exc:  # a bug must reach JS as an Error, not crash
            return _error_json("Error", f"{module}.{function} failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Release open resources (the database handle)."""
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None
                self._db_target = None

    def after_fork(self, worktree: str) -> None:
        """In a forked session's worker: stop sharing the parent's database connection.

        An in-memory database is part of the copied memory and stays; a file database is opened
        again (a SQLite connection must not be used by two processes), unless it lies outside
        the new, possibly narrower, worktree.
        """
        self._root = os.path.realpath(worktree)
        target = self._db_target
        if self._db is None or target is None or target == ":memory:":
            return
        self._db = None  # the parent keeps using its handle: do not close it from here
        inside = target == self._root or target.startswith(self._root + os.sep)
        self._db_target = None
        if inside:
            with contextlib.suppress(sqlite3.Error):
                self._open_db(target)

    def _dispatch(self, module: str, function: str, args_json: str) -> Any:
        if module not in self._enabled:
            raise JsError(
                f"Invalid module {module!r}: it is not enabled for this session's template; "
                f"enabled modules: {', '.join(sorted(self._enabled)) or 'none'}"
            )
        handler = self._handlers.get((module, function))
        if handler is None:
            raise _type_error(f"{module}.{function} is not a function")
        try:
            args = json.loads(args_json) if args_json else []
        except ValueError as exc:
            raise _type_error(f"{module}.{function}: arguments are not valid JSON: {exc}") from exc
        if not isinstance(args, list):
            raise _type_error(f"{module}.{function}: arguments must be a JSON array")
        return handler(*args)

    # -- paths ----------------------------------------------------------------------------

    def _resolve(self, raw: Any, what: str) -> str:
        """Absolute real path of `raw` inside the worktree, or a JsError naming `raw`."""
        if not isinstance(raw, str):
            raise _type_error(
                f'The "{what}" argument must be a string path relative to the worktree, got {_js_type(raw)}'
            )
        if raw == "" or "\x00" in raw:
            raise _type_error(f"ENOENT: invalid path {raw!r}: use a non-empty relative path")
        if os.path.isabs(raw):
            raise JsError(
                f"EACCES: absolute paths are not allowed, use a path relative to the session "
                f"worktree: {raw!r}"
            )
        resolved = os.path.realpath(os.path.join(self._root, raw))
        if resolved != self._root and not resolved.startswith(self._root + os.sep):
            raise JsError(
                f"EACCES: path escapes the session worktree: {raw!r}; use a path (and symlinks) "
                f"that stay inside it"
            )
        return resolved

    # -- fs -------------------------------------------------------------------------------

    def _fs_read(self, path: Any = None, encoding: Any = None, *_: Any) -> str:
        if isinstance(encoding, dict):
            encoding = encoding.get("encoding")
        if encoding is not None and (
            not isinstance(encoding, str) or encoding.lower() not in ("utf8", "utf-8")
        ):
            raise _type_error(
                f"readFileSync: unsupported encoding {encoding!r}; use 'utf8' (files are "
                f"always read as UTF-8 text)"
            )
        full = self._resolve(path, "path")
        try:
            with open(full, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise _os_error(exc, "open", path) from exc
        return data.decode("utf-8", errors="replace")

    def _fs_write(self, path: Any = None, data: Any = None, *_: Any) -> None:
        if not isinstance(data, str):
            raise _type_error(f'The "data" argument of writeFileSync must be a string, got {_js_type(data)}')
        full = self._resolve(path, "path")
        try:
            with open(full, "w", encoding="utf-8", newline="") as fh:
                fh.write(data)
        except OSError as exc:
            raise _os_error(exc, "open", path) from exc

    def _fs_exists(self, path: Any = None, *_: Any) -> bool:
        try:
            full = self._resolve(path, "path")
        except JsError:
            return False
        return os.path.exists(full)

    def _fs_readdir(self, path: Any = None, *_: Any) -> list[str]:
        full = self._resolve(path, "path")
        try:
            return sorted(os.listdir(full))
        except OSError as exc:
            raise _os_error(exc, "scandir", path) from exc

    # -- database -------------------------------------------------------------------------

    def _db_configure(self, path: Any = None, *_: Any) -> None:
        if path == ":memory:":
            target = ":memory:"
        else:
            target = self._resolve(path, "path")
            if os.path.isdir(target):
                raise JsError(
                    f"database.configure: {path!r} is a directory; pass a SQLite file path "
                    f"inside the worktree or ':memory:'"
                )
        self.close()
        try:
            self._open_db(target)
        except sqlite3.Error as exc:
            raise JsError(f"database.configure: cannot open {path!r}: {exc}") from exc

    def _open_db(self, target: str) -> None:
        # Autocommit: each exec() is durable at once, as with Go's database/sql.
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        conn.set_progress_handler(self._db_should_interrupt, 10_000)
        self._db = conn
        self._db_target = target

    def _db_should_interrupt(self) -> int:
        limit = self._deadline()
        return 1 if limit is not None and time.monotonic() >= limit else 0

    def _db_conn(self, function: str) -> sqlite3.Connection:
        if self._db is None:
            raise JsError(
                f"database.{function}: no database is configured; call "
                f"database.configure('file.db') or database.configure(':memory:') first"
            )
        return self._db

    def _db_query(self, sql: Any = None, *params: Any) -> list[dict[str, Any]]:
        conn = self._db_conn("query")
        _check_sql("query", sql)
        try:
            cur = conn.execute(sql, _sql_params("query", params))
            rows = cur.fetchall()
            columns = [d[0] for d in cur.description or ()]
        except sqlite3.Error as exc:
            raise _db_error("query", exc) from exc
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def _db_exec(self, sql: Any = None, *params: Any) -> dict[str, int]:
        conn = self._db_conn("exec")
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
            raise _db_error("exec", exc) from exc
        return {"rowsAffected": max(affected, 0), "lastInsertId": last_id or 0}

    def _db_close(self, *_: Any) -> None:
        self.close()

    # -- exec -----------------------------------------------------------------------------

    def _exec_run(self, cmd: Any = None, args: Any = None, *_: Any) -> str:
        if not isinstance(cmd, str) or not cmd:
            raise _type_error(
                f"exec.run: the command must be a non-empty string such as 'ls', got {_js_type(cmd)}"
            )
        if args is None:
            args = []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise _type_error(
                f"exec.run({cmd!r}, args): args must be an array of strings, e.g. ['-l', 'src']"
            )
        timeout: float | None = None
        limit = self._deadline()
        if limit is not None:
            timeout = limit - time.monotonic()
            if timeout <= 0:
                raise JsError(f"exec.run: not starting {cmd!r}: the execution's time is up")
        try:
            proc = subprocess.Popen(
                [cmd, *args],
                cwd=self._root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # so a timeout can kill the whole process group
            )
        except FileNotFoundError as exc:
            raise JsError(
                f"exec.run: command not found: {cmd!r}; install it or check the spelling and PATH"
            ) from exc
        except PermissionError as exc:
            raise JsError(f"exec.run: permission denied running {cmd!r}: {exc.strerror}") from exc
        except OSError as exc:
            raise JsError(f"exec.run: cannot start {cmd!r}: {exc.strerror or exc}") from exc
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise JsError(
                f"exec.run: {cmd!r} was still running when the execution's time limit was "
                f"reached, so it was killed; raise limits.wall_ms or make the command faster"
            ) from None
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        stdout = out.decode("utf-8", errors="replace")
        if proc.returncode != 0:
            stderr = err.decode("utf-8", errors="replace").strip()
            if proc.returncode < 0:
                status = f"was killed by signal {-proc.returncode}"
            else:
                status = f"exited with status {proc.returncode}"
            detail = f": {stderr}" if stderr else " (no stderr output)"
            raise JsError(f"exec.run: {cmd!r} {status}{detail}")
        return stdout


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _error_json(name: str, message: str) -> str:
    return json.dumps({"error": {"name": name, "message": message}}, ensure_ascii=False)


def _js_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_ERRNO_TEXT = {
    "ENOENT": "no such file or directory",
    "EISDIR": "illegal operation on a directory",
    "ENOTDIR": "not a directory",
    "EACCES": "permission denied",
}


def _os_error(exc: OSError, syscall: str, path: Any) -> JsError:
    """A Node-style message, e.g. `ENOENT: no such file or directory, open 'x'`."""
    if isinstance(exc, FileNotFoundError):
        code = "ENOENT"
    elif isinstance(exc, IsADirectoryError):
        code = "EISDIR"
    elif isinstance(exc, NotADirectoryError):
        code = "ENOTDIR"
    elif isinstance(exc, PermissionError):
        code = "EACCES"
    else:
        return JsError(f"{exc.strerror or exc}, {syscall} {path!r}")
    return JsError(f"{code}: {_ERRNO_TEXT[code]}, {syscall} {path!r}")


def _check_sql(function: str, sql: Any) -> None:
    if not isinstance(sql, str) or not sql.strip():
        raise _type_error(
            f"database.{function}: the first argument must be a SQL string, got {_js_type(sql)}"
        )


def _sql_params(function: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
    for index, value in enumerate(params, start=1):
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _type_error(
                f"database.{function}: parameter {index} is {_js_type(value)}; bind only "
                f"strings, numbers, booleans or null (JSON.stringify objects yourself)"
            )
    return params


def _db_error(function: str, exc: sqlite3.Error) -> JsError:
    if isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted":
        return JsError(f"database.{function}: interrupted because the execution's time limit was reached")
    return JsError(f"database.{function} failed: {exc}")
