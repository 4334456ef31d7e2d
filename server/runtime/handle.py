"""The server's ends of a session worker process and of its latest checkpoint.

``WorkerHandle`` sends commands to a worker, reads its messages on the event loop (events,
results, watchdog reports, checkpoints), enforces the backstop deadline and kills the process
when code cannot be stopped in place. ``CheckpointHandle`` talks to a frozen checkpoint: it can
be promoted to replace a killed worker, forked into a new session, or asked for completions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server.events import EventBatch
from server.runtime import protocol
from server.runtime.pacer import CheckpointPacer

log = logging.getLogger(__name__)

BACKSTOP_GRACE_S = 2.0
READY_TIMEOUT_S = 30.0


def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid`` (from /proc), or None if it is gone or unreadable."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[1])  # the field after the state
    except (OSError, ValueError, IndexError):
        return None


def _child_of(pid: object, parent: int) -> bool:
    return isinstance(pid, int) and not isinstance(pid, bool) and parent_pid(pid) == parent


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
    killed: bool = False  # the worker was killed: the session must continue from a checkpoint
    output_bytes: int = 0
    background: int = 0  # timers the run left running in the background


@dataclass
class _Pending:
    exec_id: str
    on_events: Callable[[EventBatch], None]
    future: asyncio.Future[RunResult]
    limits: dict[str, Any]
    kill_code: str | None = None
    cpu_ms: float = 0.0
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class BackgroundListener:
    """What a worker's owner hears about its background timers (no-ops by default)."""

    def on_background_start(self, limits: dict[str, Any]) -> None:
        return None

    def on_background_events(self, batch: EventBatch) -> None:
        return None

    def on_background_end(self, code: str | None, cpu_ms: float, output_bytes: int) -> None:
        return None


class WorkerHandle:
    """The server's end of one session worker process."""

    def __init__(
        self,
        sock: socket.socket,
        ctl: socket.socket,
        pid: int,
        *,
        on_gone: Callable[[WorkerHandle], None],
        on_checkpoint: Callable[[CheckpointHandle], None],
        pacer: CheckpointPacer,
    ) -> None:
        self.sock = sock
        self.ctl = ctl
        self.pid = pid
        self.alive = True
        self.checkpoint: CheckpointHandle | None = None
        self.listener = BackgroundListener()
        # Set by the owner: awaited after each event batch, so that the event writer can slow a
        # flooding worker down (the worker then blocks on its socket) instead of buffering.
        self.throttle: Callable[[], Awaitable[None]] | None = None
        # Called once when the process is gone (killed, crashed or closed), whoever killed it.
        self.on_exit: Callable[[WorkerHandle], None] | None = None
        # The watchdog reported a background callback spinning past its limit (code, cpu_ms).
        self.background_stuck: tuple[str, float] | None = None
        # The last execution that finished in this worker; its checkpoint follows just after.
        self.last_finished: str | None = None
        self._checkpointed = asyncio.Event()
        self._on_gone = on_gone
        self._on_checkpoint = on_checkpoint
        self._pacer = pacer
        # Executions finished since the checkpoint this worker holds was taken: a rollback
        # loses their effects too (0 when checkpoints follow every execution).
        self.since_checkpoint = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[Any] | None = None
        self._pending: _Pending | None = None
        self._early_cancels: dict[str, float] = {}  # exec id -> grace, for runs not sent yet

    async def open(self) -> None:
        self._ready = asyncio.get_running_loop().create_future()
        self._reader, self._writer = await asyncio.open_unix_connection(
            sock=self.sock, limit=protocol.MAX_FRAME
        )
        self.ctl.setblocking(False)
        self._task = asyncio.create_task(self._read_loop(), name=f"worker-{self.pid}")

    def _send(self, msg: Any) -> None:
        if self._writer is None or self._writer.is_closing():
            raise WorkerError("WORKER_CRASHED", "the session worker is not running")
        self._writer.write(protocol.encode(msg))

    async def ready(self, *, within_s: float = READY_TIMEOUT_S) -> None:
        """Wait for the worker's Ready (after Init, a promotion or a fork)."""
        assert self._ready is not None
        try:
            msg = await asyncio.wait_for(asyncio.shield(self._ready), within_s)
        except TimeoutError:
            self.kill()
            raise WorkerError("WORKER_START_FAILED", "the session worker did not start in time") from None
        if isinstance(msg, protocol.InitFailed):
            self.kill()
            raise WorkerError(msg.code, msg.message)

    async def init(self, config: dict[str, Any], *, within_s: float = 60) -> None:
        self._send(protocol.Init(config))
        await self.ready(within_s=within_s)

    async def run(self, spec: protocol.Run, on_events: Callable[[EventBatch], None]) -> RunResult:
        """Send one run and wait for its end; events go to ``on_events`` as they arrive."""
        loop = asyncio.get_running_loop()
        pending = _Pending(spec.exec_id, on_events, loop.create_future(), spec.limits)
        self._pending = pending
        wall_ms = spec.limits.get("wall_ms") or 0
        if wall_ms:
            pending.timers.append(
                loop.call_later(
                    wall_ms / 1000 + BACKSTOP_GRACE_S, self._kill_for, pending, "WALL_LIMIT_EXCEEDED"
                )
            )
        try:
            self._pacer.note_run()
            self._send(dataclasses.replace(spec, checkpoint_delay=self._pacer.delay()))
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
            self._send(protocol.Cancel(exec_id))
        pending.timers.append(
            asyncio.get_running_loop().call_later(grace_s, self._kill_for, pending, "CANCELLED")
        )

    def cancel_background(self) -> bool:
        """Ask the worker to drop its background timers (answered by a background end)."""
        try:
            self._send(protocol.CancelBackground())
            return True
        except WorkerError:
            return False

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
        """Kill the worker and discard its checkpoint (closing a session, shutting down)."""
        self.kill()
        if self.checkpoint is not None:
            self.checkpoint.close()
            self.checkpoint = None
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def take_checkpoint(self) -> CheckpointHandle | None:
        """Hand the latest checkpoint over to the caller (it is no longer this worker's)."""
        ckpt, self.checkpoint = self.checkpoint, None
        return ckpt

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        header = protocol.HEADER
        try:
            while True:
                (size,) = header.unpack(await reader.readexactly(header.size))
                protocol.check_size(size)
                msg = protocol.decode(await reader.readexactly(size))
                if type(msg) is protocol.Events:
                    self._on_events(msg)
                    if self.throttle is not None:
                        await self.throttle()
                else:
                    self._dispatch(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:  # noqa: BLE001 - a garbled frame costs this worker, not the server
            log.exception("worker %s sent an unreadable message", self.pid)
        finally:
            self._gone()

    def _on_events(self, msg: protocol.Events) -> None:
        if msg.key == protocol.BACKGROUND:
            self.listener.on_background_events(msg.batch)
        elif self._pending is not None:
            self._pending.on_events(msg.batch)

    def _dispatch(self, msg: Any) -> None:
        pending = self._pending
        if isinstance(msg, protocol.Done):
            if msg.cow_faults >= 0:
                self._pacer.note_faults(msg.cow_faults)
            if msg.background:
                # Before the run's result: the timers' first events may follow at once.
                self.listener.on_background_start(pending.limits if pending is not None else {})
            self.last_finished = msg.exec_id
            self.since_checkpoint += 1
            if pending is not None and pending.exec_id == msg.exec_id and not pending.future.done():
                pending.future.set_result(
                    RunResult(
                        msg.outcome,
                        msg.code,
                        msg.cpu_ms,
                        output_bytes=msg.output_bytes,
                        background=msg.background,
                    )
                )
        elif isinstance(msg, protocol.Stuck):
            if msg.key == protocol.BACKGROUND:
                self.background_stuck = (msg.code, msg.cpu_ms)
                if pending is not None and not pending.future.done():
                    pending.kill_code = "BACKGROUND_KILLED"
                self.kill()
            elif pending is not None:
                pending.cpu_ms = msg.cpu_ms
                self._kill_for(pending, msg.code)
        elif isinstance(msg, protocol.Checkpointed):
            self._pacer.note_checkpoint(msg.fork_s)
            self._adopt_checkpoint(msg.pid, msg.execution_id)
        elif isinstance(msg, protocol.BackgroundEnded):
            self.listener.on_background_end(msg.code, msg.cpu_ms, msg.output_bytes)
        elif isinstance(msg, protocol.Ready | protocol.InitFailed):
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg)

    def _adopt_checkpoint(self, pid: int, execution_id: str | None) -> None:
        """The worker sent the checkpoint's channel on ``ctl`` just before this message."""
        try:
            got = protocol.recv_packet(self.ctl, maxfds=1)
        except (BlockingIOError, OSError):
            got = None
        if got is None or len(got[1]) != 1:
            log.error("worker %s announced checkpoint %s without its channel", self.pid, pid)
            return
        if not _child_of(pid, self.pid):
            # The server signals this pid later: it must be the worker's own child, never a
            # process a worker taken over by its code would like killed.
            log.error("worker %s announced checkpoint %r, which is not its child", self.pid, pid)
            os.close(got[1][0])
            return
        ckpt = CheckpointHandle(socket.socket(fileno=got[1][0]), pid, execution_id)
        self.since_checkpoint = 0 if execution_id == self.last_finished else self.since_checkpoint
        old, self.checkpoint = self.checkpoint, ckpt
        if old is not None:
            old.close(kill=False)  # it exits on its own as its channel closes
        self._on_checkpoint(ckpt)
        self._checkpointed.set()

    async def current_checkpoint(self, *, within_s: float = 10.0) -> CheckpointHandle | None:
        """The checkpoint of the state after the last finished execution.

        A checkpoint is forked just after an execution has answered, so for a moment the latest
        one can be older; this waits for the one that is on its way (None if none comes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self.alive:
            ckpt = self.checkpoint
            if ckpt is not None and ckpt.usable and ckpt.execution_id == self.last_finished:
                return ckpt
            self._checkpointed.clear()
            try:
                await asyncio.wait_for(self._checkpointed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return None
        return None

    def _gone(self) -> None:
        self.kill()
        self._on_gone(self)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(
                protocol.InitFailed("WORKER_CRASHED", "the session worker exited during start-up")
            )
        pending = self._pending
        if pending is not None and not pending.future.done():
            code = pending.kill_code or "WORKER_CRASHED"
            pending.future.set_result(RunResult(None, code, killed=True, cpu_ms=pending.cpu_ms))
        if self.on_exit is not None:
            self.on_exit(self)  # the owner decides whether anything is left to recover


class CheckpointHandle:
    """The server's end of a frozen checkpoint process (a child of its worker)."""

    def __init__(self, sock: socket.socket, pid: int, execution_id: str | None) -> None:
        self.sock = sock
        self.pid = pid
        self.execution_id = execution_id  # the last execution whose end this state reflects
        self.sock.setblocking(False)
        self._lock = asyncio.Lock()
        self._closed = False
        self._close_when_idle = False

    @property
    def usable(self) -> bool:
        return not self._closed and not self._close_when_idle

    async def promote(self, make: Callable[..., WorkerHandle], msg: protocol.Promote) -> WorkerHandle:
        """Turn the checkpoint into the session's worker; it gets a fresh main channel."""
        async with self._lock:
            self._check_open()
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                await self._send(msg, [theirs.fileno()])
            finally:
                theirs.close()
            self._closed = True  # its channel now belongs to the promoted worker
            handle = make(mine, self.sock, self.pid)
            # Its state is that after this checkpoint's execution: so are its next checkpoints.
            handle.last_finished = self.execution_id
        await handle.open()
        await handle.ready()
        return handle

    async def fork(self, make: Callable[..., WorkerHandle], config: dict[str, Any]) -> WorkerHandle:
        """A new worker holding a copy of this checkpoint's state."""
        async with self._lock:
            self._check_open()
            main_mine, main_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            ctl_mine, ctl_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                await self._send(protocol.Fork(config), [main_theirs.fileno(), ctl_theirs.fileno()])
                reply = await self._recv()
            except BaseException:
                main_mine.close()
                ctl_mine.close()
                raise
            finally:
                main_theirs.close()
                ctl_theirs.close()
            if not isinstance(reply, protocol.Forked) or not _child_of(reply.pid, self.pid):
                main_mine.close()
                ctl_mine.close()
                raise WorkerError("WORKER_START_FAILED", "the checkpoint could not fork")
            handle = make(main_mine, ctl_mine, reply.pid)
            handle.last_finished = self.execution_id  # as for a promotion
        await handle.open()
        await handle.ready()
        return handle

    async def complete(self, text: str, cursor: int) -> protocol.Completions:
        async with self._lock:
            self._check_open()
            await self._send(protocol.Complete(text, cursor), [])
            reply = await self._recv()
        if not isinstance(reply, protocol.Completions):
            raise WorkerError("WORKER_CRASHED", "the checkpoint did not answer")
        return reply

    def close(self, *, kill: bool = True) -> None:
        """Discard the checkpoint: it exits when its channel closes; ``kill`` also SIGKILLs it
        at once (a session closing, the server stopping), which a routine replacement by a
        newer checkpoint does not need."""
        if self._lock.locked():
            self._close_when_idle = True  # a request is using it; closed when that ends
            asyncio.get_running_loop().create_task(self._close_later(kill))
            return
        self._close_now(kill)

    async def _close_later(self, kill: bool) -> None:
        async with self._lock:
            self._close_now(kill)

    def _close_now(self, kill: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self.sock.close()
        if kill:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    def _check_open(self) -> None:
        if self._closed:
            raise WorkerError("WORKER_CRASHED", "the checkpoint was discarded")

    async def _send(self, msg: Any, fds: list[int]) -> None:
        for _ in range(1000):
            try:
                protocol.send_packet(self.sock, msg, fds)
                return
            except BlockingIOError:
                await asyncio.sleep(0.001)
            except OSError as exc:
                raise WorkerError("WORKER_CRASHED", f"the checkpoint is gone: {exc.strerror}") from None
        raise WorkerError("WORKER_CRASHED", "the checkpoint does not read its channel")

    async def _recv(self) -> Any:
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, protocol.CTL_PACKET), READY_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise WorkerError("WORKER_CRASHED", f"the checkpoint did not answer: {exc}") from None
        if not data:
            raise WorkerError("WORKER_CRASHED", "the checkpoint is gone")
        return protocol.decode(data)
