"""The server <-> worker channel: its framing and the typed messages it carries.

Each worker has two channels to the server. ``main`` is a stream socket carrying length-prefixed
messages in both directions (commands, events, results). ``ctl`` is a SEQPACKET socket that
carries file descriptors (SCM_RIGHTS): a worker hands the server the channel of each new
checkpoint over it, and the server talks to a frozen checkpoint over that checkpoint's own
``ctl`` channel. Every message is one of the dataclasses below; sender and receiver share them.

A message is its class name, a newline and its fields as a JSON object. A worker runs hostile
JavaScript, so the server trusts nothing a worker sends: ``decode`` rebuilds only the classes
below, checks every field against its annotation (pydantic, strict: no coercion, no unknown
field) and checks that every event payload is JSON text, so what the server stores and serves
is well formed even if a QuickJS bug handed a worker to its code. Nothing in a frame names code
to run (as a pickle could), and a frame decodes to data proportionate to its size.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024
CTL_PACKET = 1 << 20  # largest control packet (a fork's configuration, a completion reply)
MAX_BATCH = 512  # most events in one Events message (the worker flushes at this many)

FOREGROUND = "fg"
BACKGROUND = "bg"
"""Event stream keys: the execution in progress, or the session's background timers."""

StreamKey = Annotated[str, StringConstraints(pattern=r"^(fg|bg)$")]  # FOREGROUND or BACKGROUND


class ProtocolError(ValueError):
    """A frame that is not one of the protocol's messages, well formed."""


_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
WorkerEvent = tuple[
    Annotated[str, StringConstraints(pattern=_TIMESTAMP)],
    # the server writes input_echo, value and system itself
    Annotated[str, StringConstraints(pattern=r"^(console|exception)$")],
    str,  # the payload: JSON text (checked for the whole batch at once, by _payloads_are_json)
]
"""(ts, type, payload JSON): one event as a worker sends it (``server.events.EventBatch``)."""


def _payloads_are_json(batch: list[WorkerEvent]) -> list[WorkerEvent]:
    loads = orjson.loads
    for event in batch:
        loads(event[2])  # raises JSONDecodeError (a ValueError), which pydantic reports
    return batch


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
    key: StreamKey
    batch: Annotated[list[WorkerEvent], Field(max_length=MAX_BATCH), AfterValidator(_payloads_are_json)]


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

    key: StreamKey
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


# ------------------------------------------------------------------ server <-> fork server


@dataclass(frozen=True, slots=True)
class ZygoteReady:
    """The fork server is warm; ``fault_s`` is its measured cost of one copy-on-write fault."""

    pid: int
    fault_s: float


@dataclass(frozen=True, slots=True)
class Spawn:
    """Fork a worker on the two attached channels (main, ctl)."""

    request_id: int


@dataclass(frozen=True, slots=True)
class Spawned:
    pid: int
    request_id: int


# ------------------------------------------------------------------ framing


def _body(msg: Any) -> bytes:
    return type(msg).__name__.encode() + b"\n" + orjson.dumps(msg)


def encode(msg: Any) -> bytes:
    """One framed message for a stream channel: its length, then its body."""
    body = _body(msg)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Any:
    """The message a frame's body holds, every field checked; ProtocolError otherwise."""
    name, newline, fields = bytes(body[:_NAME_MAX]).partition(b"\n")
    adapter = _ADAPTERS.get(name) if newline else None
    if adapter is None:
        raise ProtocolError(f"not a message of the protocol: {bytes(body[:40])!r}")
    try:
        return adapter.validate_json(body[len(name) + 1 :])
    except ValidationError as exc:
        raise ProtocolError(f"a malformed {name.decode()} message: {exc}") from None


def check_size(size: int) -> int:
    """A frame's announced size, refused past ``MAX_FRAME`` (before anything is read)."""
    if size > MAX_FRAME:
        raise ProtocolError(f"a message of {size} bytes is over the {MAX_FRAME}-byte limit")
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
    data = _body(msg)
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
    try:
        return decode(data), list(fds)
    except ProtocolError:
        for fd in fds:
            _close_quietly(fd)
        raise


def _close_quietly(fd: int) -> None:
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
        ZygoteReady,
        Spawn,
        Spawned,
    )
}
"""Every message class: the only classes ``decode`` rebuilds."""

_STRICT = ConfigDict(strict=True, extra="forbid")
for _cls in MESSAGE_TYPES.values():
    _cls.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]
_ADAPTERS: dict[bytes, TypeAdapter[Any]] = {
    name.encode(): TypeAdapter(cls) for name, cls in MESSAGE_TYPES.items()
}
_NAME_MAX = max(map(len, _ADAPTERS)) + 1
