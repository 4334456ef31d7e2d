"""A checkpoint: a forked, frozen copy of a session worker, waiting on its own channel.

The worker forks after each finished execution; the child lands in ``become_checkpoint`` with
nothing but the engine's memory and a SEQPACKET channel to the server. It runs no code of its
own until the server asks it to:

- ``Promote`` (one fd attached: a fresh main channel): become the session's worker again, as
  of the moment it was taken (rollback after a kill);
- ``Fork`` (two fds: main and control channels of a new session): fork once more; the child is
  the new session's worker, the checkpoint stays as it is;
- ``Complete``: answer a completion request from the frozen state, so completion works while the
  live worker is busy.

When the server closes the channel (a newer checkpoint replaced this one, the session closed, or
the server died) the checkpoint exits.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import TYPE_CHECKING, Any, NoReturn

from server.runtime import protocol, sandbox

if TYPE_CHECKING:
    from server.runtime.worker import Worker


def become_checkpoint(worker: Worker, channel: socket.socket) -> NoReturn:
    """Entry point of the forked child: drop the live worker's channels and wait."""
    code = 0
    try:
        for sock in (worker.sock, worker.ctl):
            sock.close()
        for fd in (worker._wake_r, worker._wake_w):
            os.close(fd)
        # Forked sessions are our children; nobody waits for them.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        # A checkpoint only waits, and its exit (tearing down a copy of the worker's memory
        # map) is work nobody waits for: it gets only the CPU time nothing else wants.
        _scheduling(os.SCHED_IDLE)
        _serve(worker, channel)
    except BaseException:  # noqa: BLE001 - a checkpoint must never return into the worker's code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _serve(worker: Worker, channel: socket.socket) -> None:
    while True:
        got = protocol.recv_packet(channel, maxfds=2)
        if got is None:
            return  # discarded, or the server is gone
        msg, fds = got
        if isinstance(msg, protocol.Promote) and len(fds) == 1:
            _promote(worker, socket.socket(fileno=fds[0]), channel, msg)
        elif isinstance(msg, protocol.Fork) and len(fds) == 2:
            pid = os.fork()
            if pid == 0:
                channel.close()
                _forked(worker, socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1]), msg.config)
            for fd in fds:
                os.close(fd)
            protocol.send_packet(channel, protocol.Forked(pid))
        elif isinstance(msg, protocol.Complete):
            found = worker.engine.complete(msg.input, msg.cursor)
            protocol.send_packet(
                channel, protocol.Completions(found["from"], found["to"], found["candidates"])
            )
        else:
            for fd in fds:
                os.close(fd)


def _promote(worker: Worker, main: socket.socket, ctl: socket.socket, msg: protocol.Promote) -> NoReturn:
    """Continue as the session's worker from the frozen state (its checkpoint channel becomes
    its control channel)."""
    main.setblocking(True)
    ctl.setblocking(True)
    worker._attach(main, ctl)
    worker._checkpoint_pids = set()  # the old worker's checkpoints were its children, not ours
    if msg.background_limits is not None:
        worker.set_background(msg.background_limits)
    if msg.clear_background:
        worker.engine.clear_background()
        worker.background_active = False
    _resume(worker)


def _forked(worker: Worker, main: socket.socket, ctl: socket.socket, config: dict[str, Any]) -> NoReturn:
    """Become the worker of a new session that starts with a copy of this state."""
    main.setblocking(True)
    ctl.setblocking(True)
    worker._attach(main, ctl)
    worker._checkpoint_pids = set()
    # A forked session starts with no background work of the parent's (and no history).
    worker.engine.clear_background()
    worker.background_active = False
    worker.stale = False
    worktree = config.get("worktree") or worker.worktree
    if worktree != worker.worktree:
        # A fork may narrow file access to a directory inside the parent's worktree; the kernel
        # keeps the parent's confinement and adds this one on top (it can never widen it).
        sandbox.narrow(worktree)
        worker.worktree = worktree
        try:
            os.chdir(worktree)
        except OSError:
            pass
    if worker.modules is not None:
        worker.modules.after_fork(worktree)
    if "mem_mb" in config:
        worker.set_memory(config["mem_mb"] or 0)
    _resume(worker)


def _scheduling(policy: int) -> None:
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except (OSError, AttributeError):  # not Linux, or not allowed: keep the current policy
        pass


def _resume(worker: Worker) -> NoReturn:
    # A worker again: batch work to the kernel, like every session worker (see zygote.py).
    _scheduling(os.SCHED_BATCH)
    code = 0
    try:
        worker.send(protocol.Ready(os.getpid()))
        worker.checkpoint()  # a fresh checkpoint of this very state, for the next kill
        code = worker.serve()
    finally:
        os._exit(code)
