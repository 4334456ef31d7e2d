"""The session worker: runs in a process forked by the zygote and hosts one QuickJS engine.

Threads: the main thread owns the engine (QuickJS contexts are single-threaded) and runs one
execution at a time; a reader thread owns the socket's receive side, turns ``cancel`` into a
flag at once, flushes console events that have waited too long, and acts as the watchdog: when
the main thread is stuck inside JavaScript past a limit or a cancel it tells the server, which
kills this process and rebuilds the session.
"""

from __future__ import annotations

import contextlib
import os
import queue
import resource
import select
import socket
import threading
import time
from typing import Any

import orjson
from orjson import dumps

from server.clock import now_iso
from server.runtime import protocol, sandbox

FLUSH_EVENTS = 512  # flush at this many buffered events...
FLUSH_AFTER_S = 0.001  # ...or when the oldest buffered event is this old
WATCH_INTERVAL_S = 0.002
STUCK_GRACE_S = 0.05  # how long code may keep running after a cancel / output limit


class _Skip(Exception):
    """Internal: leave the run before starting any JavaScript."""


class Run:
    """Mutable state of the execution in progress (shared with the reader thread)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        limits = spec.get("limits") or {}
        self.exec_id: str = spec["exec_id"]
        self.cpu_s = (limits.get("cpu_ms") or 0) / 1000
        self.wall_s = (limits.get("wall_ms") or 0) / 1000
        max_events = limits.get("max_events") or 0
        reserved = (1 if spec.get("kind") == "repl" else 0) + 1  # echo + closing event
        self.event_budget = max(0, max_events - reserved) if max_events else -1
        self.byte_budget = (limits.get("max_output_kb") or 0) * 1024 or -1
        self.events = 0
        self.bytes = 0
        self.start_wall = time.monotonic()
        self.start_cpu = time.process_time()
        self.box_cpu = 0.0  # CPU of `exec` boxes, counted by their helper process
        self.deadline = self.start_wall + self.wall_s if self.wall_s else None
        self.cancelled = False
        self.cancel_at = 0.0
        self.stop_code: str | None = None  # OUTPUT_LIMIT_EXCEEDED once the limit is hit
        self.stop_at = 0.0
        self.in_js = False
        self.reported_stuck = False

    def cpu_used(self) -> float:
        return time.process_time() - self.start_cpu + self.box_cpu

    def limit_code(self) -> str | None:
        """The limit this run has passed, if any (checked by both threads)."""
        if self.cancelled:
            return "CANCELLED"
        if self.stop_code:
            return self.stop_code
        if self.cpu_s and self.cpu_used() >= self.cpu_s:
            return "CPU_LIMIT_EXCEEDED"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "WALL_LIMIT_EXCEEDED"
        return None


class Worker:
    def __init__(self, sock: socket.socket, engine: Any) -> None:
        self.sock = sock
        self.engine = engine
        self.send_lock = threading.Lock()
        self.buf: list[tuple[str, str, str]] = []
        self.buf_since = 0.0
        self.last_flush = 0.0
        self.commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.wake = threading.Event()
        self.run: Run | None = None
        self.modules: Any = None
        self.worktree = "."
        # The reader sleeps in select() without a timeout while idle; a byte on this pipe wakes
        # it when a run starts so it can begin watching.
        self._wake_r, self._wake_w = os.pipe()
        # A cancel can overtake its run (the reader sees it before the main thread dequeues
        # the run); remember it so the run starts out cancelled.
        self._cancel_lock = threading.Lock()
        self._early_cancel: set[str] = set()

    # ------------------------------------------------------------- sending

    def send(self, msg: Any) -> None:
        data = protocol.encode(msg)
        with self.send_lock:
            self.sock.sendall(data)

    def flush(self) -> None:
        with self.send_lock:
            if not self.buf:
                return
            batch, self.buf = self.buf, []
            self.last_flush = time.monotonic()
            self.sock.sendall(protocol.encode(("ev", batch)))

    # ------------------------------------------------------------- host callbacks

    def console(self, level: str, text: str) -> str | None:
        """Host callback for every console.* call: the hottest path in the worker."""
        run = self.run
        if run is None:
            return None
        if run.cancelled:
            return "execution cancelled"
        if run.stop_code:
            return "output limit exceeded"
        if run.event_budget >= 0 and run.events >= run.event_budget:
            return self._output_limit(run, "max_events")
        size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
        if run.byte_budget >= 0 and run.bytes + size > run.byte_budget:
            return self._output_limit(run, "max_output_kb")
        run.events += 1
        run.bytes += size
        event = (now_iso(), "console", dumps({"level": level, "text": text}).decode())
        # The reader thread may swap the buffer out to flush it: append under the same lock.
        with self.send_lock:
            buf = self.buf
            buf.append(event)
            n = len(buf)
            if n == 1:
                now = time.monotonic()
                self.buf_since = now
                due = now - self.last_flush >= FLUSH_AFTER_S  # first line after a quiet spell
            else:  # in a burst, batch: at FLUSH_EVENTS lines, or when the batch has aged
                due = n >= FLUSH_EVENTS or (
                    n & 31 == 0 and time.monotonic() - self.buf_since >= FLUSH_AFTER_S
                )
        if due:
            self.flush()
        return None

    def _output_limit(self, run: Run, which: str) -> str:
        run.stop_code = "OUTPUT_LIMIT_EXCEEDED"
        run.stop_at = time.monotonic()
        return f"output limit exceeded ({which})"

    def host_call(self, module: str, function: str, args_json: str) -> str:
        run = self.run
        if run is not None and run.cancelled:
            return orjson.dumps({"error": {"name": "Error", "message": "execution cancelled"}}).decode()
        if self.modules is None:
            return orjson.dumps({"error": {"name": "Error", "message": f"Invalid module: {module}"}}).decode()
        return self.modules.call(module, function, args_json)

    def deadline(self) -> float | None:
        run = self.run
        return None if run is None else run.deadline

    # RunBudget (server.runtime.modules): what `exec` needs to know about the run in progress.
    def cpu_left(self) -> float | None:
        run = self.run
        return None if run is None or not run.cpu_s else run.cpu_s - run.cpu_used()

    def charge_cpu(self, seconds: float) -> None:
        run = self.run
        if run is not None:
            run.box_cpu += seconds
            if run.cpu_s and run.cpu_used() >= run.cpu_s and run.stop_code is None:
                run.stop_code, run.stop_at = "CPU_LIMIT_EXCEEDED", time.monotonic()

    def stopped(self) -> bool:
        run = self.run
        return run is None or run.limit_code() is not None

    # ------------------------------------------------------------- reader / watchdog thread

    def reader(self) -> None:
        while True:
            run = self.run
            timeout = WATCH_INTERVAL_S if run is not None else None
            try:
                watched: list[Any] = [self.sock, self._wake_r]
                ready, _, _ = select.select(watched, [], [], timeout)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
                continue
            if ready:
                msg = protocol.recv_blocking(self.sock)
                if msg is None or msg[0] == "shutdown":
                    os._exit(0)  # the server closed our channel: nothing left to do
                if msg[0] == "cancel":
                    with self._cancel_lock:
                        run = self.run
                        if run is not None and run.exec_id == msg[1]:
                            if not run.cancelled:
                                run.cancel_at = time.monotonic()
                                run.cancelled = True
                                self.wake.set()
                        else:
                            self._early_cancel.add(msg[1])
                    continue
                self.commands.put(msg)
                continue
            run = self.run
            if run is None:
                continue
            if self.buf and time.monotonic() - self.buf_since >= FLUSH_AFTER_S:
                with contextlib.suppress(OSError):
                    self.flush()
            if run.in_js and not run.reported_stuck:
                code = run.limit_code()
                if code is None:
                    continue
                since = run.cancel_at if code == "CANCELLED" else run.stop_at
                if code in ("CANCELLED", "OUTPUT_LIMIT_EXCEEDED") and (
                    time.monotonic() - since < STUCK_GRACE_S
                ):
                    continue  # give the code a moment to stop at its next host call
                run.reported_stuck = True
                with contextlib.suppress(OSError):
                    self.flush()
                    self.send(("stuck", run.exec_id, code, round(run.cpu_used() * 1000, 3)))

    # ------------------------------------------------------------- main thread

    def init(self, cfg: dict[str, Any]) -> None:
        from server.runtime.modules import ModuleHost

        self.worktree = cfg["worktree"]
        with contextlib.suppress(OSError):
            os.chdir(self.worktree)
        self.modules = ModuleHost(self.worktree, list(cfg["modules"]), self.deadline, budget=self)
        eng = self.engine
        eng.bind_host(console=self.console, host_call=self.host_call)
        eng.configure(modules=cfg["modules"], strict=cfg["strict"], esm=cfg["esm"])
        mem_mb = cfg.get("mem_mb") or 0
        eng.set_memory_limit(mem_mb * 1024 * 1024 if mem_mb else 0)
        _os_memory_backstop(mem_mb)
        try:  # before any library or user code runs, and before a second thread exists
            sandbox.confine(self.worktree, cfg.get("read_only") or ())
        except Exception as exc:  # noqa: BLE001 - never run user code unconfined
            return self.send(
                ("init_failed", {"code": "INTERNAL", "message": f"cannot confine the worker: {exc}"})
            )
        for name, path in cfg["libraries"]:
            try:
                with open(path, encoding="utf-8") as fh:
                    source = fh.read()
            except OSError as exc:
                return self.send(
                    ("init_failed", {"code": "LIBRARY_UNAVAILABLE", "message": f"{name}: {exc}"})
                )
            exc_payload = eng.load_library(source, f"{name}.js")
            if exc_payload is not None:
                return self.send(
                    (
                        "init_failed",
                        {
                            "code": "STARTUP_FAILED",
                            "message": f"library {name} failed to load: {exc_payload.get('message')}",
                        },
                    )
                )
        self.send(("ready", os.getpid()))

    def set_limits(self, mem_mb: int) -> None:
        self.engine.set_memory_limit(mem_mb * 1024 * 1024 if mem_mb else 0)

    def execute(self, spec: dict[str, Any]) -> None:
        eng = self.engine
        run = Run(spec)
        self.wake.clear()
        if "mem_mb" in (spec.get("limits") or {}):
            self.set_limits(spec["limits"]["mem_mb"] or 0)
        with self._cancel_lock:
            self.run = run
            if self._early_cancel:
                if run.exec_id in self._early_cancel:
                    run.cancelled = True
                    run.cancel_at = time.monotonic()
                self._early_cancel.clear()
        os.write(self._wake_w, b"!")
        outcome: Any = None
        code: str | None = None
        try:
            if run.cancelled:  # cancelled before it began: do not start the code at all
                code = "CANCELLED"
                raise _Skip
            run.in_js = True
            eng.start(
                kind=spec["kind"],
                source=spec["source"],
                filename=spec.get("filename") or "<repl>",
                args=spec.get("args") or {},
                env=spec.get("env") or {},
            )
            res = eng.poll()
            run.in_js = False
            while True:
                if isinstance(res, tuple):  # an Outcome: the code finished
                    code = "CANCELLED" if run.cancelled else run.stop_code
                    if code is None:
                        outcome = res
                    break
                code = run.limit_code()
                if code is not None:
                    break  # a limit or a cancel: stopped in place, between JS calls
                wait = res
                if run.deadline is not None:
                    left = max(0.0, run.deadline - time.monotonic())
                    wait = left if wait is None else min(wait, left)
                if wait is None or wait > 0:
                    self.wake.wait(wait)
                    self.wake.clear()
                    if run.cancelled or (run.deadline is not None and time.monotonic() >= run.deadline):
                        continue
                run.in_js = True
                eng.run_due_timers()
                res = eng.poll()
                run.in_js = False
        except _Skip:
            pass
        finally:
            run.in_js = False
            if code is not None or outcome is None:
                with contextlib.suppress(Exception):
                    eng.clear()
            self.run = None
        self.flush()
        self.send(
            (
                "done",
                run.exec_id,
                {
                    "outcome": None if outcome is None else (outcome[0], outcome[1]),
                    "code": code,
                    "cpu_ms": round(run.cpu_used() * 1000, 3),
                    "wall_ms": round((time.monotonic() - run.start_wall) * 1000, 3),
                    "output_bytes": run.bytes,
                },
            )
        )

    def serve(self) -> int:
        # Init (which confines this process) runs before the reader thread starts: Landlock,
        # no_new_privs and capabilities bind the calling thread and the threads it starts later.
        first = protocol.recv_blocking(self.sock)
        if first is None:
            os._exit(0)
        if first[0] == "init":
            self.init(first[1])
        else:
            self.commands.put(first)
        threading.Thread(target=self.reader, name="worker-reader", daemon=True).start()
        while True:
            msg = self.commands.get()
            op = msg[0]
            if op == "run":
                self.execute(msg[1])
            elif op == "init":
                self.init(msg[1])


def _os_memory_backstop(mem_mb: int) -> None:
    """Cap the address space well above the JS heap limit so a runaway host stays contained."""
    if not mem_mb:
        return
    try:
        with open("/proc/self/statm") as fh:
            vm_pages = int(fh.read().split()[0])
        current = vm_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return
    cap = current + mem_mb * 2 * 1024 * 1024 + 512 * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def worker_main(fd: int, engine: Any) -> int:
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    return Worker(sock, engine).serve()
