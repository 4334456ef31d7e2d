"""Kernel confinement of a session worker: Landlock, no_new_privs and no capabilities left.

A worker calls ``confine()`` once, before it runs any user code (libraries, startup files,
executions), and before it starts a second thread: Landlock, ``no_new_privs`` and capabilities
are attributes of the calling thread, inherited only by threads and processes created later.
After it the worker may read and write inside its worktree only, read the library cache and
the Python runtime, execute nothing, open no TCP connection, signal no process outside its own
domain, and holds no capability even when the server runs as root. ``narrow()`` stacks a second
ruleset that keeps the same runtime paths but only a subdirectory of the worktree (for a fork
of a confined worker); Landlock rulesets only ever take access away.
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat
import sys
from dataclasses import dataclass
from typing import Any

# Landlock's filesystem rights (linux/landlock.h), and the ABI version that introduced each.
_FS_RIGHTS = {
    "EXECUTE": (1 << 0, 1),
    "WRITE_FILE": (1 << 1, 1),
    "READ_FILE": (1 << 2, 1),
    "READ_DIR": (1 << 3, 1),
    "REMOVE_DIR": (1 << 4, 1),
    "REMOVE_FILE": (1 << 5, 1),
    "MAKE_CHAR": (1 << 6, 1),
    "MAKE_DIR": (1 << 7, 1),
    "MAKE_REG": (1 << 8, 1),
    "MAKE_SOCK": (1 << 9, 1),
    "MAKE_FIFO": (1 << 10, 1),
    "MAKE_BLOCK": (1 << 11, 1),
    "MAKE_SYM": (1 << 12, 1),
    "REFER": (1 << 13, 2),
    "TRUNCATE": (1 << 14, 3),
    "IOCTL_DEV": (1 << 15, 5),
}
_NET_TCP = 0b11  # BIND_TCP | CONNECT_TCP, from ABI 4
_SCOPES = 0b11  # ABSTRACT_UNIX_SOCKET | SIGNAL, from ABI 6
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every arch
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# What a worker may do inside its worktree: what `fs` and SQLite (journal, WAL) need. Not
# granted anywhere: EXECUTE, symlinks, devices, FIFOs, sockets, REFER (cross-directory renames)
# and device ioctls.
_FILE_READ = ("READ_FILE",)
_DIR_READ = ("READ_FILE", "READ_DIR")
_DIR_WRITE = (
    "READ_FILE",
    "READ_DIR",
    "WRITE_FILE",
    "TRUNCATE",
    "MAKE_REG",
    "MAKE_DIR",
    "REMOVE_FILE",
    "REMOVE_DIR",
)
_FILE_WRITE = ("READ_FILE", "WRITE_FILE", "TRUNCATE")

# Files outside the runtime's directories that the C library reads on its own (time zone).
_SYSTEM_FILES = ("/etc/localtime",)
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")

PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE and their locks: a process
# that is uid 0 gains no capability back by exec or by changing uids.
SECURE_BITS = 0b1110_1111
_CAP_VERSION_3 = 0x20080522


@dataclass
class Confinement:
    """What ``confine()`` did; kept so that ``narrow()`` can stack a tighter ruleset."""

    worktree: str
    read_only: tuple[str, ...]
    landlock: bool
    capabilities_dropped: bool


_state: Confinement | None = None
_abi: int | None = None


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled (cached)."""
    global _abi
    if _abi is None:
        try:
            version = _syscall()(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
        except (OSError, AttributeError):
            version = -1
        _abi = max(0, int(version))
    return _abi


@functools.cache
def runtime_read_paths() -> tuple[str, ...]:
    """What the Python runtime and QuickJS read after start-up, measured: the interpreter and
    the venv (lazy imports, tracebacks), this package and the system library directories.

    Not the interpreter's working directory nor the repository an editable install lives in:
    the server's own database is often there. Cached: the zygote computes it once.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, package}
    paths.update(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))
    paths.update(_SYSTEM_DIRS)
    paths.update(_SYSTEM_FILES)
    return tuple(sorted(os.path.realpath(p) for p in paths if p and os.path.exists(p)))


def prepare() -> None:
    """Do once, before forking workers, what every confinement needs (probe, paths, libc)."""
    _syscall()
    landlock_abi()
    runtime_read_paths()


def confine(worktree: str, read_only: list[str] | tuple[str, ...] = ()) -> Confinement:
    """Confine the calling thread (and everything it starts later) to ``worktree``.

    Capabilities go first (dropping the bounding set needs CAP_SETPCAP), then no_new_privs,
    then the Landlock ruleset. Without Landlock the worker still loses its capabilities; the
    server has logged a warning about it at start.
    """
    global _state
    dropped = drop_capabilities()
    _no_new_privs()
    root = os.path.realpath(worktree)
    reads = tuple(dict.fromkeys([*runtime_read_paths(), *read_only]))
    applied = False
    if landlock_abi() > 0:
        _apply_ruleset(root, reads)
        applied = True
    _state = Confinement(root, reads, applied, dropped)
    return _state


def narrow(subdir: str) -> Confinement:
    """Stack a second ruleset: read and write only inside ``subdir`` of the current worktree.

    For a process forked from a confined worker that must see less than its parent. The
    runtime paths stay readable; the rest of the old worktree becomes unreachable.
    """
    global _state
    if _state is None:
        raise RuntimeError("narrow() needs a confined process: call confine() first")
    target = os.path.realpath(subdir)
    if target != _state.worktree and not target.startswith(_state.worktree + os.sep):
        raise ValueError(f"narrow(): {subdir!r} is not inside the worktree {_state.worktree!r}")
    if not os.path.isdir(target):
        raise ValueError(f"narrow(): {subdir!r} is not a directory")
    if _state.landlock:
        _apply_ruleset(target, _state.read_only)
    _state = Confinement(target, _state.read_only, _state.landlock, _state.capabilities_dropped)
    return _state


def current() -> Confinement | None:
    """The confinement applied in this process, if any."""
    return _state


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in linux/landlock.h
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _access(names: tuple[str, ...], abi: int) -> int:
    """The bits of ``names`` that this ABI knows."""
    value = 0
    for name in names:
        bit, since = _FS_RIGHTS[name]
        if abi >= since:
            value |= bit
    return value


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _apply_ruleset(worktree: str, read_only: tuple[str, ...]) -> None:
    """One Landlock layer: every right this ABI knows is handled (denied unless granted
    below), TCP bind/connect is handled with no port granted, signals and abstract UNIX
    sockets are scoped to the domain; then the read-only paths and the worktree are granted."""
    abi = landlock_abi()
    attr = _RulesetAttr(
        _access(tuple(_FS_RIGHTS), abi), _NET_TCP if abi >= 4 else 0, _SCOPES if abi >= 6 else 0
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct as this kernel knows it
    call = _syscall()
    ruleset = _check(
        call(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)),
        "landlock_create_ruleset",
    )
    try:
        for path in read_only:
            if path != worktree:
                _grant(ruleset, path, _DIR_READ, _FILE_READ, abi)
        _grant(ruleset, worktree, _DIR_WRITE, _FILE_WRITE, abi)
        _check(call(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _grant(
    ruleset: int, path: str, dir_rights: tuple[str, ...], file_rights: tuple[str, ...], abi: int
) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        rule = _PathBeneathAttr(_access(dir_rights if is_dir else file_rights, abi), fd)
        result = _syscall()(
            _SYS_ADD_RULE,
            ctypes.c_int(ruleset),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
        )
        _check(result, f"landlock_add_rule({path})")
    finally:
        os.close(fd)


# ------------------------------------------------------------------ privileges


@functools.cache
def _syscall() -> Any:
    fn = _libc().syscall
    fn.restype = ctypes.c_long
    return fn


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl.restype = ctypes.c_int
    return libc


def _no_new_privs() -> None:
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> bool:
    """Leave the calling thread no capability: bounding, ambient, effective, permitted,
    inheritable all empty, and securebits locked so a uid-0 process regains none by exec.

    Returns True when the thread held some capability before (the server runs as root).
    """
    libc = _libc()
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    held = any(d.effective or d.permitted or d.inheritable for d in data)
    if held:
        libc.prctl(PR_SET_SECUREBITS, SECURE_BITS, 0, 0, 0)  # needs CAP_SETPCAP: before the drop
        for cap in range(256):  # numbered from 0; EINVAL marks the first one the kernel lacks
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    empty = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), empty) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    return held


def status() -> dict[str, Any]:
    """What the server reports in ``GET /api/v1/runtime/summary`` (``exec`` is added there)."""
    return {"landlock": landlock_abi() > 0}
