"""One server per SQLite file: an exclusive lock on the database file, held for the server's life.

SQLite is one node (API.md §14): two servers on one file would each believe every session is
theirs, and each number events from its own memory. ``flock`` locks are independent of the
POSIX locks SQLite itself takes on the file, are released by the kernel when the process dies
(even by SIGKILL), and are not inherited by the workers (the descriptor is close-on-exec and
the workers come from a fork server that never sees it).
"""

from __future__ import annotations

import fcntl
import os

from server.config import ConfigError


class SqliteServerLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError saying why the server cannot start."""
        # Created here if it does not exist yet: SQLite reads an empty file as an empty database.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"the database {self.path} is in use by another vm-system server: a SQLite file "
                "serves one server only; stop the other one, give this one its own --db, or run "
                "several nodes on one PostgreSQL database (see docs/cluster.md)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
