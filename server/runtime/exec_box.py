"""The `exec` native module: each program runs in a bubblewrap box, started by a helper process.

A confined worker cannot start bubblewrap itself (Landlock forbids mounts and executing
anything), so when a template enables `exec` the worker starts a helper first, before it
confines itself: ``python -m server.runtime.exec_box``. The helper is the only process that
runs bwrap; it takes requests over a socket, builds the bwrap command line itself, and answers
with the output and the CPU the box used. It dies with its worker (PR_SET_PDEATHSIG), bwrap
dies with it (--die-with-parent), and every process in the box dies with the box's PID
namespace.

The box: every namespace unshared (no network, its own PID namespace), no capability, the
system directories read-only, a minimal /etc (its own passwd), no /proc, a read-only root and
the worktree bound read-write as the only writable path and the working directory, a minimal
environment, and RLIMIT_CPU on every process as a backstop for the helper's own CPU count.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from server.runtime.beneath import EscapeError, open_beneath

_LEN = struct.Struct("!I")
MAX_STDOUT = 8 * 1024 * 1024  # more than this and the program is stopped
MAX_STDERR = 64 * 1024  # kept for the error message; the rest is dropped
MAX_REQUEST = 1024 * 1024  # a run request (command and arguments) from the worker
POLL_S = 0.05  # how often the box's CPU is counted while it runs
STOP_POLL_S = 0.01  # how often the worker asks whether the execution was cancelled
KILL_WAIT_S = 5.0
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_ETC = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
)
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSWD = "root:x:0:0:root:{home}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def box_args(bwrap: str, workdir_fd: int, workdir: str, data_fds: tuple[int, int], info_fd: int) -> list[str]:
    """The bwrap command line; the command and its arguments follow it."""
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _SYSTEM_ETC:
        args += ["--ro-bind-try", path, path]
    args += ["--ro-bind-data", str(data_fds[0]), "/etc/passwd"]
    args += ["--ro-bind-data", str(data_fds[1]), "/etc/group"]
    args += ["--dev", "/dev", "--bind-fd", str(workdir_fd), workdir, "--chdir", workdir]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--info-fd", str(info_fd), "--"]
    return args


def probe() -> str | None:
    """Run `true` in a box; None when bubblewrap works here, else why it does not."""
    bwrap = find_bwrap()
    if bwrap is None:
        return "bubblewrap (the `bwrap` program, Debian package `bubblewrap`) is not installed"
    import tempfile  # the server's start only: workers and helpers never need it

    with tempfile.TemporaryDirectory(prefix="vm-system-probe-") as tmp:
        cwd = os.path.realpath(tmp)
        result = _run_box(bwrap, cwd, cwd, "true", [], timeout_s=30.0, cpu_s=None, control=None)
    if result["status"] == "exited" and result["code"] == 0:
        return None
    return (
        f"bubblewrap cannot start a box on this machine: {result.get('message') or result['stderr'].strip()}"
    )


# ------------------------------------------------------------------ the helper (broker)


def _run_box(
    bwrap: str,
    root: str,
    cwd: str,
    cmd: str,
    args: list[str],
    *,
    timeout_s: float | None,
    cpu_s: float | None,
    control: socket.socket | None,
) -> dict[str, Any]:
    """Run one program in a box; wait for it, its time, its CPU budget or a kill request."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        rel = os.path.relpath(cwd, root)
        workdir_fd = open_beneath(root_fd, rel, os.O_PATH | os.O_DIRECTORY)
    except (EscapeError, ValueError):
        return _failure(f"the working directory {cwd!r} is not inside the session worktree")
    finally:
        os.close(root_fd)
    data_fds = [_data_fd(_PASSWD.format(home=cwd)), _data_fd(_GROUP)]
    info_r, info_w = os.pipe()
    os.set_inheritable(workdir_fd, True)
    for fd in (*data_fds, info_w):
        os.set_inheritable(fd, True)
    argv = box_args(bwrap, workdir_fd, cwd, (data_fds[0], data_fds[1]), info_w) + [cmd, *args]
    env = {"PATH": _PATH, "HOME": cwd, "TMPDIR": cwd, "LANG": "C.UTF-8"}
    limit = None if cpu_s is None else max(1, math.ceil(cpu_s)) + 1

    def set_limits() -> None:  # in the forked child, before exec (this helper has one thread)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (limit, limit))

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(workdir_fd, *data_fds, info_w),
            env=env,
            preexec_fn=set_limits if limit is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        return _failure(f"cannot start bubblewrap: {exc.strerror or exc}")
    finally:
        for fd in (workdir_fd, *data_fds, info_w):
            os.close(fd)
    try:
        return _watch(proc, info_r, timeout_s, cpu_s, control)
    finally:
        os.close(info_r)


def _data_fd(text: str) -> int:
    r, w = os.pipe()
    os.write(w, text.encode())  # far below a pipe's buffer
    os.close(w)
    return r


def _watch(
    proc: subprocess.Popen[bytes],
    info_r: int,
    timeout_s: float | None,
    cpu_s: float | None,
    control: socket.socket | None,
) -> dict[str, Any]:
    assert proc.stdout is not None and proc.stderr is not None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    sel.register(info_r, selectors.EVENT_READ, "info")
    if control is not None:
        sel.register(control, selectors.EVENT_READ, "control")
    out, err = bytearray(), bytearray()
    open_pipes = 2
    box_pid: int | None = None
    info = b""
    stopped: str | None = None  # why the helper stopped the box
    cpu_seen = 0.0
    while open_pipes:
        wait = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
        for key, _ in sel.select(wait):
            if key.data == "info":
                chunk = os.read(info_r, 4096)
                if chunk:
                    info += chunk
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        box_pid = int(json.loads(info)["child-pid"])
                else:
                    sel.unregister(info_r)
            elif key.data == "control":
                msg = _recv(key.fileobj)  # type: ignore[arg-type]
                if msg is None or msg.get("op") == "kill":
                    stopped = stopped or "killed"
            else:
                chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                elif key.data == "out":
                    out += chunk
                    if len(out) > MAX_STDOUT:
                        stopped = stopped or "output"
                elif len(err) < MAX_STDERR:
                    err += chunk[: MAX_STDERR - len(err)]
        if stopped is None and deadline is not None and time.monotonic() >= deadline:
            stopped = "timeout"
        if stopped is None and cpu_s is not None and box_pid is not None:
            cpu_seen = max(cpu_seen, namespace_cpu_s(box_pid))
            if cpu_seen >= cpu_s:
                stopped = "cpu"
        if stopped is not None:
            _kill_box(proc, box_pid)
            break
    sel.close()
    code, cpu_used = _reap(proc, box_pid)
    cpu_used = max(cpu_used, cpu_seen)
    stdout = bytes(out[:MAX_STDOUT]).decode("utf-8", errors="replace")
    stderr = bytes(err).decode("utf-8", errors="replace")
    if stopped is not None:
        return {"status": stopped, "code": code, "stdout": stdout, "stderr": stderr, "cpu_s": cpu_used}
    if code == 1 and stderr.startswith("bwrap: "):
        return _bwrap_failure(stderr, cpu_used)
    return {"status": "exited", "code": code, "stdout": stdout, "stderr": stderr, "cpu_s": cpu_used}


def _bwrap_failure(stderr: str, cpu_used: float) -> dict[str, Any]:
    line = stderr.strip().splitlines()[0]
    status = "not_found" if line.startswith("bwrap: execvp") and "No such file" in line else "failed"
    if line.startswith("bwrap: execvp") and "Permission denied" in line:
        status = "denied"
    return {"status": status, "code": 1, "stdout": "", "stderr": stderr, "cpu_s": cpu_used, "message": line}


def _kill_box(proc: subprocess.Popen[bytes], box_pid: int | None) -> None:
    # Killing the namespace's first process makes the kernel kill every other one in it;
    # bwrap itself is killed too in case the box has not started yet.
    for pid in (box_pid, proc.pid):
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _reap(proc: subprocess.Popen[bytes], box_pid: int | None) -> tuple[int, float]:
    """Wait for bwrap (so for the whole box); its exit code and the CPU the box used."""
    end = time.monotonic() + KILL_WAIT_S
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() >= end:
            _kill_box(proc, box_pid)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode, usage.ru_utime + usage.ru_stime


def namespace_cpu_s(box_pid: int) -> float:
    """CPU seconds of every live process in the box's PID namespace, including what each has
    collected from its waited-for children (processes that ended were counted by their parent)."""
    try:
        ns = os.readlink(f"/proc/{box_pid}/ns/pid")
    except OSError:
        return 0.0
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _failure(message: str) -> dict[str, Any]:
    return {"status": "failed", "code": -1, "stdout": "", "stderr": "", "cpu_s": 0.0, "message": message}


# JSON, never pickle: the helper is not confined and must not trust what a worker sends.
def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    body = json.dumps(msg, ensure_ascii=False).encode()
    sock.sendall(_LEN.pack(len(body)) + body)


def _recv(sock: socket.socket, limit: int = MAX_REQUEST) -> dict[str, Any] | None:
    """One message, or None when the other side has gone or sent something malformed."""
    head = _recv_exact(sock, _LEN.size)
    if head is None or _LEN.unpack(head)[0] > limit:
        return None
    body = _recv_exact(sock, _LEN.unpack(head)[0])
    try:
        msg = None if body is None else json.loads(body)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = sock.recv(n, socket.MSG_WAITALL) if n else b""
    return data if len(data) == n else None  # shorter: the other side has gone


def _request(msg: dict[str, Any]) -> tuple[str, str, list[str], float | None, float | None] | None:
    """A run request's fields, checked: the worker that sent it runs untrusted code."""
    cwd, cmd, args = msg.get("cwd"), msg.get("cmd"), msg.get("args")
    limits = [msg.get("timeout_s"), msg.get("cpu_s")]
    strings = [cwd, cmd, *(args if isinstance(args, list) else [None])]
    if not all(isinstance(v, str) and "\x00" not in v for v in strings) or not cmd:
        return None
    if not all(v is None or (isinstance(v, int | float) and math.isfinite(v)) for v in limits):
        return None
    timeout_s, cpu_s = (None if v is None else max(0.0, float(v)) for v in limits)
    return str(cwd), str(cmd), [str(a) for a in args], timeout_s, cpu_s  # type: ignore[union-attr]


def broker_main(fd: int, root: str, parent: int) -> None:
    """The helper's loop: one request at a time, for the life of its session.

    It ends when every holder of the other end of its socket is gone: the worker and the
    session's checkpoints (which inherit the socket, so that a worker promoted from a
    checkpoint after a kill keeps its helper). When the server dies, its workers and their
    checkpoints go, and so does this helper.
    """
    if os.getppid() != parent:
        return
    bwrap = find_bwrap()
    sock = socket.socket(fileno=fd)
    while True:
        msg = _recv(sock)
        if msg is None:
            return
        if msg.get("op") != "run":
            continue  # a late kill for a run that has already ended
        run_id = msg.get("id")
        try:
            request = _request(msg)
            if request is None:
                result = _failure("malformed exec request")
            elif bwrap is None:
                result = _failure("bubblewrap is not installed")
            else:
                cwd, cmd, args, timeout_s, cpu_s = request
                result = _run_box(bwrap, root, cwd, cmd, args, timeout_s=timeout_s, cpu_s=cpu_s, control=sock)
        except Exception as exc:  # noqa: BLE001 - the worker must get an answer, not a hang
            result = _failure(f"{type(exc).__name__}: {exc}")
        try:
            _send(sock, {**result, "id": run_id})
        except OSError:
            return  # the session has gone


# ------------------------------------------------------------------ the worker's side


class ExecBox:
    """The worker's handle on its helper; started before the worker confines itself."""

    def __init__(self, root: str) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # -S (no site): the helper needs only the standard library and this package, so it
        # starts in a fraction of the time; PYTHONPATH names where this package lives.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-S",
                "-m",
                "server.runtime.exec_box",
                str(theirs.fileno()),
                root,
                str(os.getpid()),
            ],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": package_root},
        )
        theirs.close()
        self._sock = mine
        self._runs = 0

    def run(
        self,
        cmd: str,
        args: list[str],
        *,
        cwd: str,
        timeout_s: float | None,
        cpu_s: float | None,
        stop: Callable[[], bool],
    ) -> dict[str, Any]:
        """Run ``cmd`` in a box and wait; ``stop()`` is asked often and kills the box when true.

        Answers carry the request's id: one for a run of a worker that was killed meanwhile
        (this worker may be its checkpoint, promoted) is skipped.
        """
        self._runs += 1
        run_id = f"{os.getpid()}-{self._runs}"
        _send(
            self._sock,
            {
                "op": "run",
                "id": run_id,
                "cmd": cmd,
                "args": args,
                "cwd": cwd,
                "timeout_s": timeout_s,
                "cpu_s": cpu_s,
            },
        )
        killed = False
        while True:
            readable, _, _ = select.select([self._sock], [], [], STOP_POLL_S)
            if readable:
                answer = _recv(self._sock, limit=4 * MAX_STDOUT + MAX_STDERR * 4 + 4096)
                if answer is None:
                    return _failure("the exec helper process has stopped")
                if answer.pop("id", None) != run_id:
                    continue
                return answer
            if not killed and stop():
                killed = True
                _send(self._sock, {"op": "kill"})

    def detach(self) -> None:
        """Let go of the helper without stopping it (it serves the session it belongs to)."""
        self._sock.close()

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        with contextlib.suppress(Exception):
            self._proc.wait(timeout=KILL_WAIT_S)


if __name__ == "__main__":
    broker_main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
