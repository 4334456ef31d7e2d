"""Native modules (fs, database, exec) that JavaScript reaches through the worker's host call."""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from server.runtime.beneath import EscapeError, open_beneath
from server.runtime.database import Database
from server.runtime.hostcalls import JsError, error_json, js_type, jsonable, type_error


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


class RunBudget(Protocol):
    """What the worker tells a module about the execution in progress (used by `exec`)."""

    def cpu_left(self) -> float | None:
        """CPU seconds the execution may still use, None without a CPU limit."""
        ...

    def charge_cpu(self, seconds: float) -> None:
        """Count CPU used outside the worker process (an exec box) against the execution."""
        ...

    def stopped(self) -> bool:
        """True once the execution was cancelled or passed a limit."""
        ...


class ModuleHost:
    """Serves `require('fs'|'database'|'exec')` calls for one session, confined to its worktree.

    Runs inside the session's worker process; every call is synchronous and `call()` never
    raises, so a bug here surfaces as a JavaScript Error rather than killing the worker. Paths
    are checked by name first (for clear messages), then opened race-free beneath the worktree.
    """

    def __init__(
        self,
        worktree: str,
        enabled: Iterable[str],
        deadline: Callable[[], float | None],
        *,
        budget: RunBudget | None = None,
    ) -> None:
        self._root = os.path.realpath(worktree)
        self._root_fd: int | None = None  # opened at the first fs call (the worktree may be gone)
        self._enabled = frozenset(normalize_module_name(n) for n in enabled)
        self._deadline = deadline
        self._budget = budget
        self._db = Database(self._resolve, deadline)
        # The exec helper must exist before the worker confines itself (see exec_box).
        self._box: Any = None
        self._box_missing = "exec.run: the exec module is not available in this session"
        if "exec" in self._enabled:
            from server.runtime.exec_box import ExecBox

            self._box = ExecBox(self._root)
        self._handlers: dict[tuple[str, str], Callable[..., Any]] = {
            ("fs", "readFileSync"): self._fs_read,
            ("fs", "writeFileSync"): self._fs_write,
            ("fs", "existsSync"): self._fs_exists,
            ("fs", "readdirSync"): self._fs_readdir,
            ("database", "configure"): self._db.configure,
            ("database", "query"): self._db.query,
            ("database", "exec"): self._db.exec,
            ("database", "close"): self._db.close,
            ("exec", "run"): self._exec_run,
        }

    # -- dispatch -------------------------------------------------------------------------

    def call(self, module: str, function: str, args_json: str) -> str:
        """Run `module.function(...args)`; return `{"ok": value}` or `{"error": {...}}` as JSON."""
        try:
            value = self._dispatch(module, function, args_json)
            return json.dumps({"ok": jsonable(value)}, ensure_ascii=False, allow_nan=False)
        except JsError as exc:
            return error_json(exc.name, exc.message)
        except Exception as exc:  # a bug must reach JS as an Error, not crash
            return error_json("Error", f"{module}.{function} failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Release open resources (the database handle, the exec helper)."""
        self._db.close()
        if self._box is not None:
            self._box.close()
            self._box = None

    def after_fork(self, worktree: str) -> None:
        """In a forked session's worker: its own worktree (maybe narrower), its own database
        connection, and no share in the parent's exec helper (its socket is the parent's)."""
        self._root = os.path.realpath(worktree)
        self._root_fd = None  # the inherited descriptor names the parent's worktree
        self._db.after_fork(self._root)
        if self._box is not None:
            self._box.detach()
            self._box = None
            self._box_missing = (
                "exec.run: exec is not available in a forked session (its sandbox helper belongs "
                "to the session it was forked from); create a session from the template to use it"
            )

    def _dispatch(self, module: str, function: str, args_json: str) -> Any:
        if module not in self._enabled:
            raise JsError(
                f"Invalid module {module!r}: it is not enabled for this session's template; "
                f"enabled modules: {', '.join(sorted(self._enabled)) or 'none'}"
            )
        handler = self._handlers.get((module, function))
        if handler is None:
            raise type_error(f"{module}.{function} is not a function")
        try:
            args = json.loads(args_json) if args_json else []
        except ValueError as exc:
            raise type_error(f"{module}.{function}: arguments are not valid JSON: {exc}") from exc
        if not isinstance(args, list):
            raise type_error(f"{module}.{function}: arguments must be a JSON array")
        return handler(*args)

    # -- paths ----------------------------------------------------------------------------

    def _resolve(self, raw: Any, what: str) -> str:
        """Absolute real path of `raw` inside the worktree, or a JsError naming `raw`."""
        if not isinstance(raw, str):
            raise type_error(
                f'The "{what}" argument must be a string path relative to the worktree, got {js_type(raw)}'
            )
        if raw == "" or "\x00" in raw:
            raise type_error(f"ENOENT: invalid path {raw!r}: use a non-empty relative path")
        if os.path.isabs(raw):
            raise JsError(
                f"EACCES: absolute paths are not allowed, use a path relative to the session "
                f"worktree: {raw!r}"
            )
        try:
            resolved = os.path.realpath(os.path.join(self._root, raw))
        except OSError as exc:  # e.g. EINVAL: a symlink was swapped for a file while being resolved
            raise _os_error(exc, "open", raw) from None
        if resolved != self._root and not resolved.startswith(self._root + os.sep):
            raise _escape(raw)
        return resolved

    def _open(self, raw: Any, flags: int, syscall: str) -> int:
        """The path checked by name, then its resolved form opened beneath the worktree: no
        step may leave it, whatever was swapped in since the check."""
        rel = os.path.relpath(self._resolve(raw, "path"), self._root)
        try:
            if self._root_fd is None:
                self._root_fd = os.open(self._root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            return open_beneath(self._root_fd, rel, flags)
        except EscapeError:
            raise _escape(raw) from None
        except OSError as exc:
            raise _os_error(exc, syscall, raw) from exc

    # -- fs -------------------------------------------------------------------------------

    def _fs_read(self, path: Any = None, encoding: Any = None, *_: Any) -> str:
        if isinstance(encoding, dict):
            encoding = encoding.get("encoding")
        if encoding is not None and (
            not isinstance(encoding, str) or encoding.lower() not in ("utf8", "utf-8")
        ):
            raise type_error(
                f"readFileSync: unsupported encoding {encoding!r}; use 'utf8' (files are "
                f"always read as UTF-8 text)"
            )
        # O_NONBLOCK: opening a FIFO must not hang the worker; only regular files are read.
        fd = self._open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, "open")
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise _os_error(IsADirectoryError(errno.EISDIR, "is a directory"), "read", path)
            if not stat.S_ISREG(mode):
                raise JsError(f"EINVAL: not a regular file, open {path!r}")
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
        return data.decode("utf-8", errors="replace")

    def _fs_write(self, path: Any = None, data: Any = None, *_: Any) -> None:
        if not isinstance(data, str):
            raise type_error(f'The "data" argument of writeFileSync must be a string, got {js_type(data)}')
        fd = self._open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_NOCTTY, "open")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(data)

    def _fs_exists(self, path: Any = None, *_: Any) -> bool:
        try:
            os.close(self._open(path, os.O_PATH, "stat"))
        except JsError:
            return False
        return True

    def _fs_readdir(self, path: Any = None, *_: Any) -> list[str]:
        fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY, "scandir")
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    # -- exec -----------------------------------------------------------------------------

    def _exec_run(self, cmd: Any = None, args: Any = None, *_: Any) -> str:
        if not isinstance(cmd, str) or not cmd:
            raise type_error(
                f"exec.run: the command must be a non-empty string such as 'ls', got {js_type(cmd)}"
            )
        if args is None:
            args = []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise type_error(f"exec.run({cmd!r}, args): args must be an array of strings, e.g. ['-l', 'src']")
        if "\x00" in cmd or any("\x00" in a for a in args):
            raise type_error(f"exec.run({cmd!r}, args): the command and its arguments must not contain NUL")
        timeout: float | None = None
        limit = self._deadline()
        if limit is not None:
            timeout = limit - time.monotonic()
            if timeout <= 0:
                raise JsError(f"exec.run: not starting {cmd!r}: the execution's time is up")
        budget = self._budget
        cpu_left = budget.cpu_left() if budget is not None else None
        if cpu_left is not None and cpu_left <= 0:
            raise JsError(f"exec.run: not starting {cmd!r}: the execution's CPU time is used up")
        if self._box is None:
            raise JsError(self._box_missing)
        result = self._box.run(
            cmd,
            args,
            cwd=self._root,
            timeout_s=timeout,
            cpu_s=cpu_left,
            stop=budget.stopped if budget is not None else (lambda: False),
        )
        if budget is not None:
            budget.charge_cpu(result.get("cpu_s") or 0.0)
        return _exec_outcome(cmd, result)


def _exec_outcome(cmd: str, result: dict[str, Any]) -> str:
    """The program's stdout, or the JsError its end deserves."""
    status = result["status"]
    if status == "exited" and result["code"] == 0:
        return str(result["stdout"])
    messages = {
        "timeout": f"exec.run: {cmd!r} was still running when the execution's time limit was "
        f"reached, so it was killed; raise limits.wall_ms or make the command faster",
        "cpu": f"exec.run: {cmd!r} used up the execution's CPU time (limits.cpu_ms, counted over "
        f"all its processes), so it was killed",
        "killed": "exec.run: execution cancelled",
        "output": f"exec.run: {cmd!r} wrote more than 8 MiB to stdout, so it was killed",
        "not_found": f"exec.run: command not found: {cmd!r}; install it or check the spelling and PATH",
        "denied": f"exec.run: permission denied running {cmd!r}",
    }
    if status in messages:
        raise JsError(messages[status])
    if status == "exited":
        stderr = str(result["stderr"]).strip()
        detail = f": {stderr}" if stderr else " (no stderr output)"
        raise JsError(f"exec.run: {cmd!r} exited with status {result['code']}{detail}")
    raise JsError(f"exec.run: cannot run {cmd!r}: {result.get('message') or 'the sandbox failed'}")


def _escape(raw: Any) -> JsError:
    return JsError(
        f"EACCES: path escapes the session worktree: {raw!r}; use a path (and symlinks) that stay inside it"
    )


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
