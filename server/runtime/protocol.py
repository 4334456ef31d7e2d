"""The server <-> worker channel: its framing and the typed messages it carries.

Each worker has two channels to the server. ``main`` is a stream socket carrying length-prefixed
pickled messages in both directions (commands, events, results), rebuilt by a restricted
unpickler that knows only the classes below. ``ctl`` is a SEQPACKET socket that carries file
descriptors (SCM_RIGHTS): a worker hands the server the channel of each new checkpoint over it,
and the server talks to a frozen checkpoint over that checkpoint's own ``ctl`` channel. Every
message is one of the dataclasses below; sender and receiver share them.
"""

from __future__ import annotations

import io
import pickle
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from server.events import EventBatch

HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024
CTL_PACKET = 1 << 20  # largest control packet (a fork's configuration, a completion reply)

FOREGROUND = "fg"
BACKGROUND = "bg"
"""Event stream keys: the execution in progress, or the session's background timers."""


# ------------------------------------------------------------------ server -> worker (main)


@dataclass(frozen=True, slots=True)
class Init:
    """Configure a fresh worker: worktree, modules, memory, libraries to load."""

    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Run:
    """Run one execution. ``timers``: "wait" (end when no timer is left) or "background"."""

    exec_id: str
    kind: str
    source: str
    filename: str
    limits: dict[str, Any]
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    timers: str = "wait"
    # Take the checkpoint after this run at once (0) or once the session has been idle this
    # many seconds (the server is busy: checkpoints come out of spare time).
    checkpoint_delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Cancel:
    exec_id: str


@dataclass(frozen=True, slots=True)
class CancelBackground:
    """Clear every background timer; answered by BackgroundEnded("CANCELLED")."""


# ------------------------------------------------------------------ worker -> server (main)


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class InitFailed:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Events:
    key: str  # FOREGROUND or BACKGROUND
    batch: EventBatch


@dataclass(frozen=True, slots=True)
class Done:
    """A run ended in the worker (it was not killed)."""

    exec_id: str
    outcome: tuple[str, dict[str, Any]] | None  # ("value" | "exception", payload)
    code: str | None  # CANCELLED, CPU_/WALL_LIMIT_EXCEEDED, OUTPUT_LIMIT_EXCEEDED
    cpu_ms: float
    output_bytes: int
    background: int  # timers left running in the background after this run
    cow_faults: int = -1  # page faults of this run when it followed a checkpoint (else -1)


@dataclass(frozen=True, slots=True)
class Stuck:
    """Code is spinning past a limit or a cancel and cannot be stopped in place: kill me."""

    key: str  # FOREGROUND or BACKGROUND
    code: str
    cpu_ms: float


@dataclass(frozen=True, slots=True)
class BackgroundEnded:
    """No background timer is left (code None), or they were stopped (code says why)."""

    code: str | None
    cpu_ms: float
    output_bytes: int


@dataclass(frozen=True, slots=True)
class Checkpointed:
    """A checkpoint child exists; its channel was sent on ``ctl`` just before this message."""

    pid: int
    execution_id: str | None  # the last execution whose end it reflects (None: start-up only)
    fork_s: float = 0.0  # what forking it cost the worker


# ------------------------------------------------------------------ server -> checkpoint (ctl)


@dataclass(frozen=True, slots=True)
class Promote:
    """Become the session's worker on the attached main channel (one fd)."""

    background_limits: dict[str, Any] | None = None
    clear_background: bool = False  # a background callback spun: drop the timers


@dataclass(frozen=True, slots=True)
class Fork:
    """Fork a new session's worker on the attached main and ctl channels (two fds)."""

    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Complete:
    input: str
    cursor: int


# ------------------------------------------------------------------ checkpoint -> server (ctl)


@dataclass(frozen=True, slots=True)
class Forked:
    pid: int


@dataclass(frozen=True, slots=True)
class Completions:
    start: int
    end: int
    candidates: list[dict[str, str]]


# ------------------------------------------------------------------ framing


def encode(msg: Any) -> bytes:
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


class _MessageUnpickler(pickle.Unpickler):
    """Rebuilds this module's messages and plain data, nothing else.

    A worker runs hostile JavaScript: if a QuickJS bug ever handed it control, a plain
    ``pickle.loads`` in the server would run whatever callable the worker's bytes named. Only
    the message classes below may be named; everything else in a message is builtin data
    (str, int, float, bool, None, bytes, list, tuple, dict), which pickle rebuilds without
    naming any class.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name in MESSAGE_TYPES:
            return MESSAGE_TYPES[name]
        raise pickle.UnpicklingError(f"a worker message may not name {module}.{name}")


def decode(body: bytes) -> Any:
    return _MessageUnpickler(io.BytesIO(body)).load()


def check_size(size: int) -> int:
    """A frame's announced size, refused past ``MAX_FRAME`` (before anything is read)."""
    if size > MAX_FRAME:
        raise pickle.UnpicklingError(f"a worker message of {size} bytes is over the {MAX_FRAME}-byte limit")
    return size


def recv_blocking(sock: socket.socket) -> Any | None:
    """Read one framed message from a blocking stream socket; None on EOF."""
    header = _recv_exact(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    body = _recv_exact(sock, check_size(size))
    if body is None:
        return None
    return decode(body)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def send_packet(sock: socket.socket, msg: Any, fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send one message as one SEQPACKET packet, with file descriptors attached."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv_packet(sock: socket.socket, maxfds: int = 0) -> tuple[Any, list[int]] | None:
    """Receive one SEQPACKET message and its file descriptors; None on EOF."""
    data, fds, _flags, _addr = socket.recv_fds(sock, CTL_PACKET, maxfds)
    if not data:
        for fd in fds:
            _close_quietly(fd)
        return None
    return decode(data), list(fds)


def _close_quietly(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass


MESSAGE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Init,
        Run,
        Cancel,
        CancelBackground,
        Ready,
        InitFailed,
        Events,
        Done,
        Stuck,
        BackgroundEnded,
        Checkpointed,
        Promote,
        Fork,
        Complete,
        Forked,
        Completions,
    )
}
"""Every message class: the only classes ``decode`` rebuilds."""
