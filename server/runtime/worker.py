"""The session worker: runs in a process forked by the zygote and hosts one QuickJS engine.

Threads: the main thread owns the engine (QuickJS contexts are single-threaded) and runs one
execution at a time, plus the session's background timers between and during executions; a
reader thread owns the socket's receive side, turns ``Cancel`` into a flag at once, flushes
console events that have waited too long, and acts as the watchdog: when the main thread is
stuck inside JavaScript past a limit or a cancel it tells the server, which kills this process
and continues the session from its checkpoint.

Checkpoints: after each finished execution (and after start-up) the main thread forks a child
that keeps a frozen copy of the whole runtime and waits on a channel of its own (see
``server/runtime/checkpoint.py``). The server can promote it to be the session's worker after a
kill, fork a new session from it, or ask it for completions.
"""

from __future__ import annotations

import contextlib
import os
import queue
import resource
import select
import signal
import socket
import threading
import time
from typing import Any

import orjson
from orjson import dumps

from server.clock import now_iso
from server.runtime import protocol, sandbox
from server.runtime.channel import Channel
from server.runtime.engine import BACKGROUND as BG_OWNER
from server.runtime.engine import Outcome
from server.runtime.limits import Stream
from server.runtime.protocol import BACKGROUND

WATCH_INTERVAL_S = 0.002
STUCK_GRACE_S = 0.05  # how long code may keep running after a cancel / output limit
# Checkpoint policy (docs/performance.md has the measurements behind it). A fork, the
# copy-on-write after it and the old checkpoint's exit cost a few milliseconds of CPU, more for
# a big heap. So the checkpoint after an execution is forked at once when the server says it
# has the time for it (``Run.checkpoint_delay`` 0: it is not busy) and the worker's memory is
# small; otherwise once the session has been idle for that delay (and, for a big heap, for
# IDLE_FACTOR times what its last fork cost): executions that follow each other faster share
# the checkpoint taken before them.
EXACT_MEMORY_BYTES = 96 * 1024 * 1024
IDLE_FACTOR = 4.0
# Background timers change the state at every callback: checkpoint once they pause this long,
# not after each one (a 3 ms interval otherwise spent most of its time forking checkpoints).
BACKGROUND_IDLE_S = 0.05
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Worker:
    def __init__(self, sock: socket.socket, ctl: socket.socket, engine: Any) -> None:
        self.engine = engine
        self.modules: Any = None
        self.worktree = "."
        self.checkpoints = True
        self._background_limits: dict[str, Any] = {}
        self.background = Stream.background({})
        self.background_active = False  # the server has a background execution running
        self.stale = False  # the state changed since the last checkpoint
        self.stale_at = 0.0  # when it last changed (monotonic)
        self.fork_cost = 0.0  # seconds the last checkpoint's fork took
        self.fresh_checkpoint = False  # no run since the last checkpoint
        self.checkpoint_delay = 0.0  # idle time before a deferred checkpoint
        self.last_execution: str | None = None  # the last execution that finished here
        self._checkpoint_pids: set[int] = set()
        self._attach(sock, ctl)

    def _attach(self, sock: socket.socket, ctl: socket.socket) -> None:
        """Fresh channels and thread state (a new worker, or a checkpoint being promoted)."""
        self.sock = sock
        self.ctl = ctl
        self.out = Channel(sock)
        self.commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.wake = threading.Event()
        self.run: Stream | None = None  # the foreground run
        self.active: Stream | None = None  # the stream whose JavaScript runs now
        # The reader sleeps in select() without a timeout while idle; a byte on this pipe wakes
        # it when JavaScript starts so it can begin watching.
        self._wake_r, self._wake_w = os.pipe()
        # A cancel can overtake its run (the reader sees it before the main thread dequeues
        # the run); remember it so the run starts out cancelled.
        self._cancel_lock = threading.Lock()
        self._early_cancel: set[str] = set()

    # ------------------------------------------------------------- sending

    def send(self, msg: Any) -> None:
        self.out.send(msg)

    def flush(self) -> None:
        self.out.flush()

    # ------------------------------------------------------------- host callbacks

    def console(self, level: str, text: str) -> str | None:
        """Host callback for every plain console line: the hottest path in the worker."""
        stream = self.active
        if stream is None:
            return None
        size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
        stop = stream.admit(size)
        if stop is not None:
            return stop
        self.out.add(stream.key, (now_iso(), "console", dumps({"level": level, "text": text}).decode()))
        return None

    def event(self, kind: str, payload_json: str) -> str | None:
        """Host callback for structured events: tables, a cleared view, background exceptions."""
        stream = self.active
        if stream is None:
            return None
        stop = stream.admit(len(payload_json))
        if stop is not None:
            return stop
        self.out.add(stream.key, (now_iso(), kind, payload_json))
        return None

    def host_call(self, module: str, function: str, args_json: str) -> str:
        stream = self.active
        if stream is not None and stream.cancelled:
            return orjson.dumps({"error": {"name": "Error", "message": "execution cancelled"}}).decode()
        if self.modules is None:
            return orjson.dumps({"error": {"name": "Error", "message": f"Invalid module: {module}"}}).decode()
        return self.modules.call(module, function, args_json)

    def deadline(self) -> float | None:
        run = self.run
        return None if run is None else run.deadline

    # RunBudget (server.runtime.modules): what `exec` needs to know about the code running now.
    def cpu_left(self) -> float | None:
        stream = self.active
        return None if stream is None or not stream.cpu_s else stream.cpu_s - stream.cpu_used()

    def charge_cpu(self, seconds: float) -> None:
        stream = self.active
        if stream is not None:
            stream.box_cpu += seconds
            if stream.cpu_s and stream.cpu_used() >= stream.cpu_s and stream.stop_code is None:
                stream.stop_code, stream.stop_at = "CPU_LIMIT_EXCEEDED", time.monotonic()

    def stopped(self) -> bool:
        stream = self.active
        return stream is None or stream.limit_code() is not None

    # ------------------------------------------------------------- reader / watchdog thread

    def reader(self) -> None:
        while True:
            watching = self.active is not None
            watched: list[Any] = [self.sock, self._wake_r]
            try:
                ready, _, _ = select.select(watched, [], [], WATCH_INTERVAL_S if watching else None)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
                continue
            if ready:
                msg = protocol.recv_blocking(self.sock)
                if msg is None:
                    os._exit(0)  # the server closed our channel: nothing left to do
                if isinstance(msg, protocol.Cancel):
                    self._cancel(msg.exec_id)
                else:
                    self.commands.put(msg)
                continue
            self._watch()

    def _cancel(self, exec_id: str) -> None:
        with self._cancel_lock:
            run = self.run
            if run is not None and run.exec_id == exec_id:
                if not run.cancelled:
                    run.cancel_at = time.monotonic()
                    run.cancelled = True
                    self.wake.set()
            else:
                self._early_cancel.add(exec_id)

    def _watch(self) -> None:
        with contextlib.suppress(OSError):
            self.out.flush_aged()
        stream = self.active
        if stream is None or not stream.in_js or stream.reported_stuck:
            return
        code = stream.limit_code()
        if code is None:
            return
        since = stream.cancel_at if code == "CANCELLED" else stream.stop_at
        if code in ("CANCELLED", "OUTPUT_LIMIT_EXCEEDED") and time.monotonic() - since < STUCK_GRACE_S:
            return  # give the code a moment to stop at its next host call
        stream.reported_stuck = True
        with contextlib.suppress(OSError):
            self.flush()
            self.send(protocol.Stuck(stream.key, code, round(stream.cpu_used() * 1000, 3)))

    # ------------------------------------------------------------- main thread: set-up

    def init(self, cfg: dict[str, Any]) -> None:
        from server.runtime.modules import ModuleHost

        self.worktree = cfg["worktree"]
        with contextlib.suppress(OSError):
            os.chdir(self.worktree)
        self.checkpoints = bool(cfg.get("checkpoints", True))
        self.modules = ModuleHost(self.worktree, list(cfg["modules"]), self.deadline, budget=self)
        eng = self.engine
        eng.bind_host(console=self.console, host_call=self.host_call, event=self.event)
        eng.configure(modules=cfg["modules"], strict=cfg["strict"], esm=cfg["esm"])
        self.set_memory(cfg.get("mem_mb") or 0)
        _os_memory_backstop(cfg.get("mem_mb") or 0)
        try:  # before any library or user code runs, and before a second thread exists
            sandbox.confine(self.worktree, cfg.get("read_only") or ())
        except Exception as exc:  # noqa: BLE001 - never run user code unconfined
            return self.send(protocol.InitFailed("INTERNAL", f"cannot confine the worker: {exc}"))
        for name, path in cfg["libraries"]:
            try:
                with open(path, encoding="utf-8") as fh:
                    source = fh.read()
            except OSError as exc:  # gone or unreadable
                return self.send(protocol.InitFailed("LIBRARY_UNAVAILABLE", f"{name}: {exc.strerror}"))
            except UnicodeDecodeError as exc:
                reason = f"{name}: the file is not valid utf-8 text ({exc.reason} at byte {exc.start})"
                return self.send(protocol.InitFailed("LIBRARY_UNAVAILABLE", reason))
            exc_payload = eng.load_library(source, f"{name}.js")
            if exc_payload is not None:
                reason = exc_payload.get("message")
                return self.send(
                    protocol.InitFailed("STARTUP_FAILED", f"library {name} failed to load: {reason}")
                )
        self.send(protocol.Ready(os.getpid()))
        self.checkpoint()

    def set_memory(self, mem_mb: int) -> None:
        self.engine.set_memory_limit(mem_mb * 1024 * 1024 if mem_mb else 0)

    # ------------------------------------------------------------- main thread: executions

    def execute(self, spec: protocol.Run) -> None:
        eng = self.engine
        if self.stale and spec.checkpoint_delay <= 0 and self.small_heap():
            self.checkpoint()  # background callbacks changed the state: keep it as it is now
        # The faults of a run right after a checkpoint are mostly its copy-on-write: what the
        # checkpoint cost this session (the pacer weighs it, server.runtime.pacer).
        fresh = self.fresh_checkpoint
        faults0 = _thread_faults() if fresh else 0
        run = Stream.foreground(spec.exec_id, spec.kind, spec.limits)
        self.wake.clear()
        if "mem_mb" in spec.limits:
            self.set_memory(spec.limits["mem_mb"] or 0)
        with self._cancel_lock:
            self.run = run
            if self._early_cancel:
                if run.exec_id in self._early_cancel:
                    run.cancelled = True
                    run.cancel_at = time.monotonic()
                self._early_cancel.clear()
        outcome: Outcome | None = None
        code: str | None = None
        try:
            if run.cancelled:  # cancelled before it began: do not start the code at all
                code = "CANCELLED"
            else:
                self._enter(run)
                eng.start(
                    kind=spec.kind,
                    source=spec.source,
                    filename=spec.filename,
                    args=spec.args,
                    env=spec.env,
                    background=spec.timers == "background",
                    budget=run.remaining(),
                )
                res = eng.poll(run.remaining())
                self._leave(run)
                outcome, code = self._drive(run, res)
        finally:
            self._leave(run)
            if code is not None or outcome is None:
                eng.clear_foreground()
            elif spec.timers == "background":
                eng.adopt_background()
            self.run = None
        if outcome is not None:
            run.bytes += len(dumps(outcome.payload))  # values count against max_output_kb
        self.flush()
        left = eng.background_count()
        if left and not self.background_active:
            # The timers this run left behind start the background execution, with its limits.
            self.background_active = True
            self.set_background(spec.limits)
        self.send(
            protocol.Done(
                run.exec_id,
                None if outcome is None else (outcome.kind, outcome.payload),
                code,
                round(run.cpu_used() * 1000, 3),
                run.bytes,
                left,
                _thread_faults() - faults0 if fresh else -1,
            )
        )
        self.fresh_checkpoint = False
        self.last_execution = run.exec_id
        if self.background_active and left == 0:
            self.end_background(None)  # this run cleared the last background timer
        self.stale, self.stale_at = True, time.monotonic()
        self.checkpoint_delay = spec.checkpoint_delay
        if spec.checkpoint_delay <= 0 and self.small_heap():
            self.checkpoint()

    def _drive(self, run: Stream, res: Outcome | float | None) -> tuple[Outcome | None, str | None]:
        """Run timers and promise jobs until the execution finishes or a limit stops it."""
        eng = self.engine
        while True:
            if isinstance(res, Outcome):  # the code finished
                # ... unless a limit was passed first: a boxed program stopped at the wall or CPU
                # limit ends the code with exec.run's error, and the execution with that limit.
                code = run.limit_code()
                return (res if code is None else None), code
            code = run.limit_code()
            if code is not None:
                return None, code  # a limit or a cancel: stopped in place, between JS calls
            wait = res
            if run.deadline is not None:
                left = max(0.0, run.deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            if wait is None or wait > 0:
                # The code waits: what it logged goes out now, not with its next line or its end
                # (the watchdog that flushes aged batches only runs while JavaScript does).
                self.flush()
                self.wake.wait(wait)
                self.wake.clear()
                if run.cancelled or (run.deadline is not None and time.monotonic() >= run.deadline):
                    continue
            self._run_due_timers()
            self._enter(run)
            res = eng.poll(run.remaining())
            self._leave(run)

    def _enter(self, stream: Stream) -> None:
        if self.active is not None and self.active is not stream:
            self.active.leave()
        self.active = stream
        stream.enter()
        if stream.cpu_s or stream.deadline is not None or stream.cancelled or stream.key == BACKGROUND:
            os.write(self._wake_w, b"!")  # the watchdog starts watching this stream

    def _leave(self, stream: Stream) -> None:
        stream.leave()
        if self.active is stream:
            self.active = None

    # ------------------------------------------------------------- main thread: timers

    def _run_due_timers(self) -> None:
        """Run every timer due now, each charged to its owner's stream."""
        eng = self.engine
        while True:
            owner = eng.next_timer_owner()
            if owner < 0:
                break
            stream = self.background if owner == BG_OWNER or self.run is None else self.run
            if stream.key == BACKGROUND:
                stream.new_callback()
            self._enter(stream)
            eng.run_timer()
            self._leave(stream)
            if stream.key == BACKGROUND:
                self.stale, self.stale_at = True, time.monotonic()
                self._background_failure()
                if stream.stop_code is not None:
                    self.end_background(stream.stop_code)
                    break
        if self.background_active and eng.background_count() == 0:
            self.end_background(None)

    def _background_failure(self) -> None:
        failed = self.engine.take_failure()  # e.g. out of memory inside a callback's jobs
        if failed is not None:
            self._enter(self.background)
            self.event("exception", dumps(failed.payload).decode())
            self._leave(self.background)

    def end_background(self, code: str | None) -> None:
        """The background timers are done (code None) or stopped: tell the server."""
        self.engine.clear_background()
        stream = self.background
        self.flush()
        if self.background_active:
            self.send(protocol.BackgroundEnded(code, round(stream.cpu_used() * 1000, 3), stream.bytes))
        self.background_active = False
        self.background = Stream.background(self._background_limits)

    def set_background(self, limits: dict[str, Any]) -> None:
        self._background_limits = dict(limits)
        fresh = Stream.background(limits)
        fresh.events, fresh.bytes = self.background.events, self.background.bytes
        self.background = fresh

    # ------------------------------------------------------------- checkpoints

    def checkpoint(self) -> None:
        """Fork a frozen copy of this runtime and hand its channel to the server."""
        if not self.checkpoints:
            return
        started = time.perf_counter()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The reader thread holds neither lock while we fork, so the child inherits them free.
        with self.out.lock, self._cancel_lock:
            self.out.flush_locked()
            pid = os.fork()
        if pid == 0:
            from server.runtime.checkpoint import become_checkpoint

            mine.close()
            become_checkpoint(self, theirs)  # never returns
        theirs.close()
        try:
            done = protocol.Checkpointed(pid, self.last_execution, time.perf_counter() - started)
            protocol.send_packet(self.ctl, done, [mine.fileno()])
            self.send(done)
        finally:
            mine.close()
        self._checkpoint_pids.add(pid)
        self.stale = False
        self.fresh_checkpoint = True
        self.fork_cost = time.perf_counter() - started

    def small_heap(self) -> bool:
        """Whether a checkpoint is cheap enough to take after every execution (the resident
        memory of this process, read from /proc in microseconds)."""
        try:
            with open("/proc/self/statm", "rb") as fh:
                resident = int(fh.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return True
        return resident <= EXACT_MEMORY_BYTES

    def _reap_checkpoints(self, *_: Any) -> None:
        """SIGCHLD: collect checkpoints that exited (the server discarded them, or killed them).

        Only our checkpoints' pids are waited for: the exec module waits for its own children.
        """
        for pid in list(self._checkpoint_pids):
            try:
                exited = os.waitpid(pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                exited = True
            if exited:
                self._checkpoint_pids.discard(pid)

    # ------------------------------------------------------------- main loop

    def serve(self, *, fresh: bool = False) -> int:
        """The main loop. A fresh worker first handles its Init, which confines this process,
        before the reader thread starts: Landlock, no_new_privs and dropped capabilities bind
        the calling thread and the threads it starts later (a checkpoint is confined already).
        """
        signal.signal(signal.SIGCHLD, self._reap_checkpoints)
        if fresh:
            first = protocol.recv_blocking(self.sock)
            if first is None:
                os._exit(0)
            if isinstance(first, protocol.Init):
                self.init(first.config)
            else:
                self.commands.put(first)
        threading.Thread(target=self.reader, name="worker-reader", daemon=True).start()
        eng = self.engine
        while True:
            timeout = eng.next_due() if self.background_active else None
            idle_checkpoint = self.stale and self.checkpoints
            wait = 0.0
            if idle_checkpoint:  # a deferred checkpoint: taken once the session is idle
                wait = self.checkpoint_delay
                if not self.small_heap():
                    wait = max(wait, self.fork_cost * IDLE_FACTOR)
                if self.background_active:  # timers that keep firing share one checkpoint
                    wait = max(wait, BACKGROUND_IDLE_S)
                due = self.stale_at + wait - time.monotonic()
                timeout = due if timeout is None else min(timeout, due)
            try:
                if timeout is not None and timeout <= 0:
                    msg = self.commands.get_nowait()
                else:
                    msg = self.commands.get(timeout=timeout)
            except queue.Empty:
                self._run_due_timers()
                self.flush()  # nothing else would send a background callback's output
                if idle_checkpoint and self.stale and time.monotonic() >= self.stale_at + wait:
                    self.checkpoint()
                continue
            if isinstance(msg, protocol.Run):
                self.execute(msg)
            elif isinstance(msg, protocol.Init):
                self.init(msg.config)
            elif isinstance(msg, protocol.CancelBackground):
                self.background_active = self.background_active or eng.background_count() > 0
                self.end_background("CANCELLED")


def _thread_faults() -> int:
    """Page faults this thread has taken (the main thread: where JavaScript runs)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


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


def worker_main(main_fd: int, ctl_fd: int, engine: Any) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sock = socket.socket(fileno=main_fd)
    sock.setblocking(True)
    ctl = socket.socket(fileno=ctl_fd)
    ctl.setblocking(True)
    return Worker(sock, ctl, engine).serve(fresh=True)
