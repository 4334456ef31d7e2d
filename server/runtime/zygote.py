"""The fork server: a small process that holds a warm QuickJS engine and forks session workers.

Started once per server with ``python -m server.runtime.zygote FD``. It never runs user code
itself. Requests arrive on the control socket as ``("spawn", ...)`` with the worker's ends of its
main and control channels attached (SCM_RIGHTS); the zygote forks, the child becomes the session worker and
the zygote answers with the child's pid. Both the zygote and its children ask the kernel to
kill them when their parent dies, so no worker outlives the server, even after SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import socket
import sys
import time

from server.runtime import protocol

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, arg: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: best effort only
        pass


def die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def cow_fault_cost(pages: int = 64) -> float:
    """Seconds one copy-on-write page fault costs on this machine (measured once, at start).

    A checkpoint's cost to its session is mostly these faults: after the fork, every page the
    worker writes again is copied first, on the next execution's time. The pacer multiplies
    the faults workers report by this (``server.runtime.pacer``).
    """
    page = os.sysconf("SC_PAGE_SIZE")
    buf = bytearray(b"\1" * (pages * page))  # written: resident and private before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # holds the pages shared until the measurement is done
        os.close(write_end)
        with contextlib.suppress(OSError):
            os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    try:
        started = time.perf_counter()
        for i in range(0, len(buf), page):
            buf[i] = 2
        return (time.perf_counter() - started) / pages
    finally:
        os.close(write_end)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def main(control_fd: int) -> None:
    die_with_parent()
    parent = os.getppid()
    # Children are reaped by the kernel; the server notices a dead worker by EOF on its socket.
    # Checkpoints are children of workers; when their worker dies they are adopted here (not by
    # the machine's init) and reaped the same way.
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Everything a worker imports is imported here, once, before forking: a new session then
    # pays for none of it and the pages stay shared between workers.
    import server.runtime.exec_box  # noqa: F401
    import server.runtime.modules  # noqa: F401
    from server.runtime import beneath, sandbox
    from server.runtime.engine import JsEngine
    from server.runtime.worker import worker_main

    engine = JsEngine()  # warm: prelude and parser compiled once, shared copy-on-write
    sandbox.prepare()
    beneath.openat2_available()
    # Everything built so far lives as long as the workers do: keep the collector off it, so
    # that collections in a worker (or a checkpoint) never write to those shared pages.
    gc.freeze()
    fault_s = cow_fault_cost()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # after the measurement, which waits for its child
    control = socket.socket(fileno=control_fd)
    control.sendall(protocol.encode(("ready", os.getpid(), fault_s)))
    if os.getppid() != parent:
        return
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(control, 1 << 16, 4)
        except (OSError, InterruptedError):
            continue
        if not msg:
            return  # server went away
        request = protocol.decode(msg[protocol.HEADER.size :])
        if request[0] != "spawn" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                control.close()
                die_with_parent()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                # User code is batch work to the kernel: it keeps its fair share of the CPU but
                # does not preempt the server's event loop when that wakes up, so a spinning
                # session cannot add latency to everyone else's requests.
                with contextlib.suppress(OSError, AttributeError):
                    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
                code = worker_main(fds[0], fds[1], engine)
            except BaseException:  # noqa: BLE001 - a worker must never return into the loop
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        control.sendall(protocol.encode(("spawned", pid, request[1])))


if __name__ == "__main__":
    main(int(sys.argv[1]))
