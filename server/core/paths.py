"""Worktree-relative paths: cleaning, confinement checks and reading files for runs."""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from server import errors
from server.runtime.beneath import EscapeError, open_beneath


def clean_relative_path(raw: str, *, field: str = "path") -> str:
    """Normalise a worktree-relative path; absolute paths and ``..`` escapes are refused."""
    value = raw.strip()
    if not value or value == ".":
        raise errors.InvalidPath(f"{field} must name a file inside the worktree, got {raw!r}")
    if any(ord(ch) < 32 for ch in value):
        raise errors.InvalidPath(f"{field} must not contain control characters (such as NUL): {raw!r}")
    if value.endswith(("/", "\\")):
        raise errors.InvalidPath(f"{field} must name a file, not a directory: {raw!r}")
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        raise errors.InvalidPath(f"{field} must be relative to the session worktree, not absolute: {raw!r}")
    cleaned = posixpath.normpath(value.replace("\\", "/"))
    if cleaned == ".." or cleaned.startswith("../"):
        raise errors.InvalidPath(f"{field} escapes the worktree with '..': {raw!r}")
    if cleaned == ".":
        raise errors.InvalidPath(f"{field} must name a file inside the worktree, got {raw!r}")
    return cleaned


def read_worktree_file(worktree: str, rel: str, *, max_bytes: int = 0, **details: str) -> str:
    """Read ``rel`` (already cleaned) inside ``worktree``, at most ``max_bytes`` (0: no cap).

    The path is checked by name for a clear message, then its resolved form is opened beneath
    the worktree (``openat2``), so a symlink swapped in after the check cannot lead to a host
    file. Blocking: callers run it off the event loop, so a large or slow file never stalls
    other requests.
    """
    if "\x00" in rel:  # rows stored before paths were checked for control characters
        raise errors.InvalidPath(f"path must not contain NUL characters: {rel!r}", path=rel, **details)
    try:
        root = os.path.realpath(worktree)
        target = os.path.realpath(os.path.join(root, rel), strict=True)
    except OSError as exc:  # missing, a loop, too long, or swapped while being resolved
        raise _unreadable(rel, exc, details) from None
    escape = errors.InvalidPath(
        f"path resolves outside the session worktree (symlink escape): {rel!r}", path=rel, **details
    )
    if target != root and not target.startswith(root.rstrip("/") + "/"):
        raise escape
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_beneath(
                root_fd, os.path.relpath(target, root), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
            )
        finally:
            os.close(root_fd)
    except EscapeError:
        raise escape from None
    except OSError as exc:
        raise _unreadable(rel, exc, details) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a directory, FIFO or device
            raise _missing(rel, details)
        if max_bytes and st.st_size > max_bytes:
            raise _too_large(rel, st.st_size, max_bytes, details)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(max_bytes + 1) if max_bytes else f.read()
        except OSError as exc:
            raise _unreadable(rel, exc, details) from None
    if max_bytes and len(data) > max_bytes:  # it grew after the fstat
        raise _too_large(rel, len(data), max_bytes, details)
    return data.decode("utf-8", errors="replace")


def _missing(rel: str, details: dict[str, str]) -> errors.DomainError:
    return errors.FileNotFound(
        f"file {rel!r} does not exist in the session worktree or is not a regular file", path=rel, **details
    )


def _unreadable(rel: str, exc: OSError, details: dict[str, str]) -> errors.DomainError:
    if exc.errno == errno.ENAMETOOLONG:
        return errors.InvalidPath(f"path is too long for the file system: {rel[:200]!r}...", **details)
    if exc.errno == errno.ELOOP:
        return errors.InvalidPath(f"path goes through a symbolic-link loop: {rel!r}", path=rel, **details)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return _missing(rel, details)
    return errors.FileNotFound(f"file {rel!r} could not be read: {exc.strerror}", path=rel, **details)


def _too_large(rel: str, size: int, cap: int, details: dict[str, str]) -> errors.DomainError:
    return errors.PayloadTooLarge(
        f"file {rel!r} is {size} bytes, over the server's limit of {cap} bytes (--max-file-bytes)",
        path=rel,
        max_bytes=cap,
        **details,
    )
