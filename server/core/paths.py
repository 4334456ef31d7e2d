"""Worktree-relative paths: cleaning, confinement checks and reading files for runs."""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

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


def read_worktree_file(worktree: str, rel: str, **details: str) -> str:
    """Read ``rel`` (already cleaned) inside ``worktree``; symlink escapes are refused.

    The path is checked by name for a clear message, then its resolved form is opened beneath
    the worktree, so a symlink swapped in after the check cannot lead to a host file.
    """
    if "\x00" in rel:  # rows stored before paths were checked for control characters
        raise errors.InvalidPath(f"path must not contain NUL characters: {rel!r}", path=rel, **details)
    try:
        root = Path(worktree).resolve()
        target = (root / rel).resolve()
    except OSError as exc:  # e.g. EINVAL: a symlink was swapped for a file while being resolved
        raise errors.FileNotFound(
            f"file {rel!r} could not be opened: {exc.strerror}; it changed while being read",
            path=rel,
            **details,
        ) from None
    escape = errors.InvalidPath(
        f"path resolves outside the session worktree (symlink escape): {rel!r}", path=rel, **details
    )
    if target != root and root not in target.parents:
        raise escape
    missing = errors.FileNotFound(
        f"file {rel!r} does not exist in the session worktree or is not a regular file", path=rel, **details
    )
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_beneath(
                root_fd, str(target.relative_to(root)), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
            )
        finally:
            os.close(root_fd)
    except EscapeError:
        raise escape from None
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise missing from None
    except OSError as exc:
        raise errors.FileNotFound(
            f"file {rel!r} could not be read: {exc.strerror}", path=rel, **details
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a directory, FIFO or device
        os.close(fd)
        raise missing
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read()
        except OSError as exc:
            raise errors.FileNotFound(
                f"file {rel!r} could not be read: {exc.strerror}", path=rel, **details
            ) from None
    return data.decode("utf-8", errors="replace")
