"""Server side of the runtime: the zygote (fork server) and the registry of worker processes.

``WorkerPool`` starts the zygote and asks it for workers, and builds the handles of workers
that come from a checkpoint (promoted after a kill, or forked into a new session), so that it
knows every process to stop at shutdown. The handles themselves are in ``handle.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import weakref

from server.runtime import protocol
from server.runtime.handle import CheckpointHandle, WorkerError, WorkerHandle
from server.runtime.pacer import CheckpointPacer

log = logging.getLogger(__name__)

SPAWN_TIMEOUT_S = 30.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WorkerPool:
    """Owns the zygote; ``spawn()`` returns a started worker handle."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._lock = asyncio.Lock()
        self._next_request = 0
        self.handles: set[WorkerHandle] = set()
        # Every checkpoint still referenced somewhere; the rest are gone with their handles.
        self.checkpoints: weakref.WeakSet[CheckpointHandle] = weakref.WeakSet()
        self.pacer = CheckpointPacer()
        self.checkpoints_taken = 0  # checkpoints forked by workers (metrics)

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
        self.pacer.fault_s = float(protocol.decode(msg[protocol.HEADER.size :])[2])
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
        main_mine, main_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl_mine, ctl_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._next_request += 1
        request_id = self._next_request
        loop = asyncio.get_running_loop()
        try:
            try:
                socket.send_fds(
                    control,
                    [protocol.encode(("spawn", request_id))],
                    [main_theirs.fileno(), ctl_theirs.fileno()],
                )
                pid = None
                while pid is None:  # skip a late answer to a spawn that timed out earlier
                    reply = await asyncio.wait_for(loop.sock_recv(control, 1 << 16), SPAWN_TIMEOUT_S)
                    if not reply:
                        raise WorkerError("WORKER_START_FAILED", "the runtime fork server has stopped")
                    msg = protocol.decode(reply[protocol.HEADER.size :])
                    if msg[0] == "spawned" and msg[2] == request_id:
                        pid = msg[1]
            finally:
                main_theirs.close()
                ctl_theirs.close()
            handle = self.make_handle(main_mine, ctl_mine, pid)
            await handle.open()
        except (OSError, TimeoutError) as exc:
            main_mine.close()
            ctl_mine.close()
            raise WorkerError("WORKER_START_FAILED", f"could not start a session worker: {exc}") from None
        except BaseException:
            main_mine.close()
            ctl_mine.close()
            raise
        return handle

    def make_handle(self, sock: socket.socket, ctl: socket.socket, pid: int) -> WorkerHandle:
        """A handle for a worker process, registered until the process is gone."""
        handle = WorkerHandle(
            sock, ctl, pid, on_gone=self._gone, on_checkpoint=self._checkpointed, pacer=self.pacer
        )
        self.handles.add(handle)
        return handle

    def _checkpointed(self, ckpt: CheckpointHandle) -> None:
        self.checkpoints.add(ckpt)
        self.checkpoints_taken += 1  # for the metrics endpoint

    def _gone(self, handle: WorkerHandle) -> None:
        self.handles.discard(handle)  # stop() waits for handles until here

    async def stop(self) -> None:
        handles = list(self.handles)
        if handles:
            await asyncio.gather(*(h.close() for h in handles), return_exceptions=True)
        for ckpt in list(self.checkpoints):
            ckpt.close()
        self.checkpoints.clear()
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
