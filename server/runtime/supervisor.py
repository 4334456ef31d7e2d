"""Server side of the runtime: the zygote process and one handle per session worker.

``WorkerPool`` starts the zygote and asks it for workers. ``WorkerHandle`` is the server's end
of one worker: it sends commands, reads the event stream on the event loop, enforces the
backstop deadline, and kills the process when code cannot be stopped in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server.events import EventBatch
from server.runtime import protocol

log = logging.getLogger(__name__)

BACKSTOP_GRACE_S = 2.0
SPAWN_TIMEOUT_S = 30.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerError(Exception):
    """The worker could not be started or initialised."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RunResult:
    """How a run ended, as seen by the server."""

    outcome: tuple[str, dict[str, Any]] | None  # ("value"|"exception", payload)
    code: str | None  # CANCELLED, CPU_/WALL_LIMIT_EXCEEDED, OUTPUT_LIMIT_EXCEEDED, WORKER_CRASHED
    cpu_ms: float = 0.0
    killed: bool = False  # the worker was killed: the session must be rebuilt
    output_bytes: int = 0


@dataclass
class _Pending:
    exec_id: str
    on_events: Callable[[EventBatch], None]
    future: asyncio.Future[RunResult]
    kill_code: str | None = None
    cpu_ms: float = 0.0
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class WorkerPool:
    """Owns the zygote; ``spawn()`` returns a started worker handle."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._lock = asyncio.Lock()
        self._next_request = 0
        self.handles: set[WorkerHandle] = set()

    async def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The server's own settings (its API token, a database URL with a password) stay out
        # of reach of user code, which can read the worker's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
        env["PYTHONPATH"] = _PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        # Started from the event-loop thread, which lives as long as the server: the zygote's
        # PR_SET_PDEATHSIG fires when that thread's process dies.
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.runtime.zygote",
            str(child.fileno()),
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child.close()
        parent.setblocking(False)
        self._control = parent
        loop = asyncio.get_running_loop()
        msg = await asyncio.wait_for(loop.sock_recv(parent, 1 << 16), timeout=60)
        if not msg:
            raise WorkerError("WORKER_START_FAILED", "the runtime fork server failed to start")
        log.info("runtime fork server ready (pid %s)", self._proc.pid)

    async def spawn(self) -> WorkerHandle:
        """A new worker process; the fork server is restarted once if it has died."""
        async with self._lock:
            try:
                return await self._spawn_locked()
            except WorkerError:
                if self._proc is not None and self._proc.returncode is None:
                    raise
            log.warning("the runtime fork server died; starting a new one")
            await self._stop_zygote()
            await self.start()
            return await self._spawn_locked()

    async def _spawn_locked(self) -> WorkerHandle:
        if self._control is None:
            raise WorkerError("WORKER_START_FAILED", "the runtime fork server is not running")
        control = self._control
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._next_request += 1
        request_id = self._next_request
        loop = asyncio.get_running_loop()
        try:
            try:
                socket.send_fds(control, [protocol.encode(("spawn", request_id))], [theirs.fileno()])
                pid = None
                while pid is None:  # skip a late answer to a spawn that timed out earlier
                    reply = await asyncio.wait_for(loop.sock_recv(control, 1 << 16), SPAWN_TIMEOUT_S)
                    if not reply:
                        raise WorkerError("WORKER_START_FAILED", "the runtime fork server has stopped")
                    msg = protocol.decode(reply[protocol.HEADER.size :])
                    if msg[0] == "spawned" and msg[2] == request_id:
                        pid = msg[1]
            finally:
                theirs.close()
            handle = WorkerHandle(self, mine, pid)
            await handle.open()
        except (OSError, TimeoutError) as exc:
            mine.close()
            raise WorkerError("WORKER_START_FAILED", f"could not start a session worker: {exc}") from None
        except BaseException:
            mine.close()
            raise
        self.handles.add(handle)
        return handle

    async def stop(self) -> None:
        handles = list(self.handles)
        if handles:
            await asyncio.gather(*(h.close() for h in handles), return_exceptions=True)
        await self._stop_zygote()

    async def _stop_zygote(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
            self._proc = None


class WorkerHandle:
    """The server's end of one session worker process."""

    def __init__(self, pool: WorkerPool, sock: socket.socket, pid: int) -> None:
        self.pool = pool
        self.sock = sock
        self.pid = pid
        self.alive = True
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._init_future: asyncio.Future[Any] | None = None
        self._pending: _Pending | None = None
        self.on_exit: Callable[[WorkerHandle], None] | None = None
        self._early_cancels: dict[str, float] = {}  # exec id -> grace, for runs not sent yet
        # Awaited after each event batch: lets the event writer slow a flooding worker down
        # (the worker then blocks on its socket) instead of buffering without bound.
        self.throttle: Callable[[], Awaitable[None]] | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(
            sock=self.sock, limit=protocol.MAX_FRAME
        )
        self._task = asyncio.create_task(self._read_loop(), name=f"worker-{self.pid}")

    def _send(self, msg: Any) -> None:
        if self._writer is None or self._writer.is_closing():
            raise WorkerError("WORKER_CRASHED", "the session worker is not running")
        self._writer.write(protocol.encode(msg))

    async def init(self, config: dict[str, Any], *, within_s: float = 60) -> None:
        self._init_future = asyncio.get_running_loop().create_future()
        self._send(("init", config))
        try:
            kind, payload = await asyncio.wait_for(self._init_future, within_s)
        except TimeoutError:
            self.kill()
            raise WorkerError("WORKER_START_FAILED", "the session worker did not start in time") from None
        if kind == "init_failed":
            self.kill()
            raise WorkerError(payload["code"], payload["message"])

    async def run(
        self,
        spec: dict[str, Any],
        on_events: Callable[[EventBatch], None],
    ) -> RunResult:
        """Send one run and wait for its end; events go to ``on_events`` as they arrive."""
        loop = asyncio.get_running_loop()
        pending = _Pending(spec["exec_id"], on_events, loop.create_future())
        self._pending = pending
        wall_ms = (spec.get("limits") or {}).get("wall_ms") or 0
        if wall_ms:
            pending.timers.append(
                loop.call_later(
                    wall_ms / 1000 + BACKSTOP_GRACE_S,
                    self._kill_for,
                    pending,
                    "WALL_LIMIT_EXCEEDED",
                )
            )
        try:
            self._send(("run", spec))
            grace = self._early_cancels.pop(pending.exec_id, None)
            if grace is not None:
                self.cancel(pending.exec_id, grace_s=grace)
            return await pending.future
        finally:
            for t in pending.timers:
                t.cancel()
            self._pending = None

    def cancel(self, exec_id: str, *, grace_s: float) -> None:
        """Ask the worker to stop ``exec_id``; kill it if it has not stopped after the grace.

        A cancel that arrives before the run has been sent is kept and applied when it is.
        """
        pending = self._pending
        if pending is None or pending.exec_id != exec_id:
            self._early_cancels[exec_id] = grace_s
            return
        with contextlib.suppress(WorkerError):
            self._send(("cancel", exec_id))
        pending.timers.append(
            asyncio.get_running_loop().call_later(grace_s, self._kill_for, pending, "CANCELLED")
        )

    def _kill_for(self, pending: _Pending, code: str) -> None:
        if self._pending is pending and not pending.future.done():
            pending.kill_code = code
            self.kill()

    def kill(self) -> None:
        if self.alive:
            self.alive = False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        self.kill()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        header = protocol.HEADER
        try:
            while True:
                head = await reader.readexactly(header.size)
                (size,) = header.unpack(head)
                msg = protocol.decode(await reader.readexactly(size))
                kind = msg[0]
                pending = self._pending
                if kind == "ev":
                    if pending is not None:
                        pending.on_events(msg[1])
                    if self.throttle is not None:
                        await self.throttle()
                elif kind == "done":
                    if pending is not None and pending.exec_id == msg[1] and not pending.future.done():
                        info = msg[2]
                        pending.future.set_result(
                            RunResult(
                                outcome=info["outcome"],
                                code=info["code"],
                                cpu_ms=info["cpu_ms"],
                                output_bytes=info.get("output_bytes", 0),
                            )
                        )
                elif kind == "stuck":
                    if pending is not None and pending.exec_id == msg[1]:
                        pending.cpu_ms = msg[3]
                        self._kill_for(pending, msg[2])
                elif kind in ("ready", "init_failed"):
                    fut = self._init_future
                    if fut is not None and not fut.done():
                        fut.set_result((kind, msg[1]))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:  # noqa: BLE001 - a garbled frame costs this worker, not the server
            log.exception("worker %s sent an unreadable message", self.pid)
        finally:
            was_alive = self.alive
            self.kill()
            self.pool.handles.discard(self)  # the pool waits for handles until here
            fut = self._init_future
            if fut is not None and not fut.done():
                fut.set_result(
                    (
                        "init_failed",
                        {
                            "code": "WORKER_CRASHED",
                            "message": "the session worker exited during start-up",
                        },
                    )
                )
            pending = self._pending
            if pending is not None and not pending.future.done():
                code = pending.kill_code or "WORKER_CRASHED"
                pending.future.set_result(
                    RunResult(
                        outcome=None,
                        code=code,
                        killed=True,
                        cpu_ms=pending.cpu_ms,
                    )
                )
            if self.on_exit is not None and was_alive:
                self.on_exit(self)
