"""The server <-> worker channel trusts no worker: a message may only name the protocol's own
classes (a worker runs hostile JavaScript), and a frame's size is bounded before it is read."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import pytest

from server.runtime import protocol

SAMPLES = [
    protocol.Run("e1", "repl", "1+1", "<input>", {"cpu_ms": 10}, timers="background"),
    protocol.Events(protocol.FOREGROUND, [("2026-01-01T00:00:00.000000Z", "console", '{"text":"x"}')]),
    protocol.Done("e1", ("value", {"json": 2, "preview": "2"}), None, 0.1, 12, 0, cow_faults=3),
    protocol.Checkpointed(123, "e1", 0.003),
    protocol.Completions(0, 3, [{"label": "foo", "kind": "property"}]),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg: object) -> None:
    framed = protocol.encode(msg)
    (size,) = protocol.HEADER.unpack(framed[: protocol.HEADER.size])
    assert protocol.decode(framed[protocol.HEADER.size :]) == msg and size == len(framed) - 4


def test_every_message_class_is_allowed_and_nothing_else() -> None:
    classes = {
        name
        for name, obj in vars(protocol).items()
        if isinstance(obj, type) and obj.__module__ == protocol.__name__ and not name.startswith("_")
    }
    assert set(protocol.MESSAGE_TYPES) == classes


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_message_that_names_another_callable_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = pickle.dumps(protocol.Events(protocol.FOREGROUND, [("t", "console", _RunsACommand(marker))]))
    with pytest.raises(pickle.UnpicklingError, match="may not name posix.system"):
        protocol.decode(hostile)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="may not name builtins.eval"):
        protocol.decode(pickle.dumps(eval))


def test_a_frame_over_the_limit_is_refused_before_it_is_read() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(protocol.HEADER.pack(protocol.MAX_FRAME + 1) + b"x" * 16)
        with pytest.raises(pickle.UnpicklingError, match="over the"):
            protocol.recv_blocking(b)


def test_a_pid_is_checked_against_its_parent_before_the_server_trusts_it() -> None:
    from server.runtime.handle import _child_of, parent_pid

    assert parent_pid(os.getpid()) == os.getppid()
    assert parent_pid(2**22 + 12345) is None  # no such process
    child = os.fork()
    if child == 0:
        os._exit(0)
    try:
        assert _child_of(child, os.getpid())
        assert not _child_of(os.getpid(), os.getpid())  # itself, e.g. the server's own pid
        assert not _child_of(str(child), os.getpid()) and not _child_of(True, os.getpid())
    finally:
        os.waitpid(child, 0)
