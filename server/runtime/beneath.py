"""Race-free opening of a path beneath a directory: openat2(RESOLVE_BENEATH) or an O_NOFOLLOW walk.

A path checked with ``realpath`` and then opened by name can be swapped for a symlink in
between. Here the kernel resolves the path relative to an open directory and refuses, during
that one resolution, any step that leaves it (``..`` above the root, an absolute symlink, a
symlink pointing outside, a ``/proc`` magic link): ``EXDEV``/``ELOOP`` instead of an outside
file. Where ``openat2`` is missing (Linux < 5.6) each component is opened with
``O_NOFOLLOW`` from the directory down, so a symlink anywhere in the path is refused.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import posixpath
import stat
from typing import Any

SYS_OPENAT2 = 437  # same number on x86_64 and aarch64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
_RETRIES = 64


class EscapeError(PermissionError):
    """The path leaves the directory it must stay beneath (through ``..`` or a symlink)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


@functools.cache
def _syscall() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.syscall
    fn.restype = ctypes.c_long
    return fn


@functools.cache
def openat2_available() -> bool:
    """True when the kernel has openat2 (probed once: an invalid call answers EFAULT, not ENOSYS)."""
    try:
        fn = _syscall()
    except (OSError, AttributeError):
        return False
    result = fn(SYS_OPENAT2, ctypes.c_int(-1), None, None, ctypes.c_size_t(0))
    return not (result < 0 and ctypes.get_errno() == errno.ENOSYS)


def open_beneath(
    dirfd: int, path: str, flags: int, mode: int = 0o666, *, use_openat2: bool | None = None
) -> int:
    """Open ``path`` (relative) beneath the directory ``dirfd``; return the new descriptor.

    Raises EscapeError when the path leaves the directory, other OSErrors as ``open`` would.
    ``use_openat2=False`` forces the component walk (used by tests and old kernels).
    """
    if use_openat2 is None:
        use_openat2 = openat2_available()
    flags |= os.O_CLOEXEC
    if use_openat2:
        return _openat2(dirfd, path, flags, mode)
    return _walk(dirfd, path, flags, mode)


def _openat2(dirfd: int, path: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    raw = ctypes.c_char_p(os.fsencode(path))
    call = _syscall()
    for _ in range(_RETRIES):
        fd = call(
            SYS_OPENAT2, ctypes.c_int(dirfd), raw, ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:  # EAGAIN: a concurrent rename raced the lookup; the kernel asks to retry
            break
    if err == errno.EXDEV:
        raise EscapeError(errno.EACCES, "path escapes the directory", path)
    raise OSError(err, os.strerror(err), path)


def _walk(dirfd: int, path: str, flags: int, mode: int) -> int:
    # Every component is opened with O_NOFOLLOW relative to the previous one, so no symlink is
    # followed at all; lexical '..' is resolved first and may not climb above the directory.
    clean = posixpath.normpath(path)
    if clean.startswith("/") or clean == ".." or clean.startswith("../"):
        raise EscapeError(errno.EACCES, "path escapes the directory", path)
    parts = [] if clean == "." else clean.split("/")
    current = os.dup(dirfd)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except OSError as exc:
                if _is_symlink(current, part):
                    raise EscapeError(errno.EACCES, "path goes through a symlink", path) from exc
                raise
            os.close(current)
            current = nxt
        last = parts[-1] if parts else "."
        try:
            fd = os.open(last, flags | os.O_NOFOLLOW, mode, dir_fd=current)
        except OSError as exc:
            if _is_symlink(current, last):
                raise EscapeError(errno.EACCES, "path is a symlink", path) from exc
            raise
        if flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH opens the link itself
            os.close(fd)
            raise EscapeError(errno.EACCES, "path is a symlink", path)
        return fd
    finally:
        os.close(current)


def _is_symlink(dirfd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False
