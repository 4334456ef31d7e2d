"""The three servers of `make bench-peers`, each a subprocess on a free port with its own temp dir.

- ``vm_system(tmp)``: ``vm-system serve`` on a fresh SQLite file, default settings; one template
  for every session, its CPU, wall-clock and output limits 0 (unlimited: Jupyter kernels have
  none, and the default output limits would stop the flood), its memory limit the default.
- ``jupyter(tmp, kernel, nodelay)``: ``jupyter server`` from the peer environment
  (``bench/peers/.env``, built by ``make bench-peers``), default settings, a random token; with
  ``nodelay`` it loads ``jupyter_nodelay_config.py`` (TCP_NODELAY on each kernel WebSocket).
  ``HOME`` is the server's temp dir, so whatever it or its kernels write (IPython's history, a
  Deno cache) lands there and is reported by ``persisted()``.

Each takes the temp dir it may write to (the caller reads it with ``persisted()`` once the
server has stopped, then removes it) and yields a ``Server``: its base URL, headers, the pid
whose process tree is measured, and what ``kernels.py`` needs to open sessions or kernels.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

PEERS_DIR = Path(__file__).resolve().parent
ROOT = PEERS_DIR.parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import free_port  # noqa: E402
from sessions import descendants  # noqa: E402

PEERS_ENV = PEERS_DIR / ".env"
JUPYTER = PEERS_ENV / "venv" / "bin" / "jupyter-server"
# `deno jupyter --install` writes its kernelspec under $HOME; the Makefile runs it with this HOME.
DENO_KERNELSPECS = PEERS_ENV / "home" / ".local" / "share" / "jupyter"
NODELAY_CONFIG = PEERS_DIR / "jupyter_nodelay_config.py"
UNLIMITED = {"cpu_ms": 0, "wall_ms": 0, "max_events": 0, "max_output_kb": 0}
START_TIMEOUT_S = 60.0


@dataclass
class Server:
    """A running server: where it answers and what is needed to open kernels on it."""

    kind: str  # "vm-system" or "jupyter"
    url: str
    pid: int
    tmp: Path
    http: aiohttp.ClientSession
    headers: dict[str, str] = field(default_factory=dict)
    kernel_name: str = ""  # Jupyter: the kernelspec ("python3" or "deno")
    template_id: str = ""  # vm-system: the template sessions are made from
    worktree: Path | None = None
    # Every process seen in its tree (pid -> start time), killed if it outlives the server.
    tree: dict[int, int] = field(default_factory=dict)

    @property
    def language(self) -> str:
        return "python" if self.kernel_name == "python3" else "js"

    def processes(self) -> list[int]:
        """The server process and all its descendants now (kernels, workers, checkpoints)."""
        pids = descendants(self.pid)
        for pid in pids:
            self.tree.setdefault(pid, _start_time(pid))
        return pids


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (with the pid, a process's identity)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return -1


def missing_environment() -> str | None:
    """Why the peer environment cannot be used, or None when it can."""
    if not JUPYTER.exists():
        return f"{JUPYTER.relative_to(ROOT)} is missing: run `make bench-peers` (it builds bench/peers/.env)"
    if not (DENO_KERNELSPECS / "kernels" / "deno" / "kernel.json").exists():
        return "the Deno kernelspec is missing from bench/peers/.env: rm -rf bench/peers/.env and rerun"
    return None


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would configure the servers."""
    prefixes = ("VM_SYSTEM_", "JUPYTER", "IPYTHON", "DENO_", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


async def _wait_ready(
    http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering:\n{_tail(log)}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the server did not answer {url} within {START_TIMEOUT_S:.0f} s (log: {log})")


def _spawn(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def log_tail(tmp: Path, lines: int = 30) -> list[str]:
    """The last lines of the server's log in ``tmp`` (for a round that failed)."""
    log = tmp / "server.log"
    return log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []


def _stop(proc: subprocess.Popen[bytes], tree: dict[int, int]) -> None:
    """SIGTERM the server, then SIGKILL what is left of the process tree seen while it ran
    (a process counts as left only if its pid still has the start time it had then)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for pid, started in tree.items():
        if pid != proc.pid and started >= 0 and _start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def _subprocess_server(
    kind: str, cmd: list[str], env: dict[str, str], tmp: Path, url: str, ready_path: str
) -> AsyncIterator[Server]:
    log = tmp / "server.log"
    proc = _spawn(cmd, env, tmp, log)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    server: Server | None = None
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await _wait_ready(http, url + ready_path, proc, log)
            server = Server(kind, url, proc.pid, tmp, http)
            yield server
    finally:
        if server is not None:
            server.processes()
        _stop(proc, server.tree if server else {})


@contextlib.asynccontextmanager
async def vm_system(tmp: Path) -> AsyncIterator[Server]:
    """``vm-system serve`` (this checkout, its defaults) on a fresh SQLite file in ``tmp``."""
    worktree = tmp / "worktree"
    worktree.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "server.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--db", str(tmp / "vm.db"), "--cache-dir", str(tmp / "cache")]
    env = _clean_env(PYTHONPATH=str(ROOT))
    async with _subprocess_server("vm-system", cmd, env, tmp, url, "/api/v1/health") as server:
        server.worktree = worktree
        async with server.http.post(url + "/api/v1/templates", json={"name": "peers"}) as resp:
            server.template_id = (await resp.json())["id"]
        patch = {"settings": {"limits": UNLIMITED}}
        async with server.http.patch(f"{url}/api/v1/templates/{server.template_id}", json=patch) as resp:
            resp.raise_for_status()
        yield server


@contextlib.asynccontextmanager
async def jupyter(tmp: Path, kernel_name: str, *, nodelay: bool) -> AsyncIterator[Server]:
    """``jupyter server`` from the peer environment for ``kernel_name`` ("python3" or "deno"),
    its root and ``HOME`` in ``tmp``."""
    (tmp / "home").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)  # made for this one server, gone with it
    cmd = [str(JUPYTER), "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0"]
    cmd += [f"--ServerApp.root_dir={tmp}", f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI machines; it changes nothing measured
    if nodelay:
        cmd.append(f"--config={NODELAY_CONFIG}")
    env = _clean_env(HOME=str(tmp / "home"), JUPYTER_PATH=str(DENO_KERNELSPECS), JUPYTER_PLATFORM_DIRS="1")
    async with _subprocess_server("jupyter", cmd, env, tmp, url, "/api/status?token=" + token) as server:
        server.kernel_name = kernel_name
        server.headers = {"Authorization": f"token {token}"}
        yield server


def persisted(server: Server) -> dict[str, Any]:
    """What the server and its kernels left on disk (read once the server has stopped)."""
    if server.kind == "vm-system":
        db = server.tmp / "vm.db"
        with contextlib.closing(sqlite3.connect(db)) as conn:
            executions = conn.execute("SELECT count(*) FROM executions").fetchone()[0]
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        size = sum(p.stat().st_size for p in server.tmp.glob("vm.db*"))
        return {"executions": executions, "events": events, "bytes": size, "files": ["vm.db"]}
    files = sorted(
        str(p.relative_to(server.tmp))
        for p in server.tmp.rglob("*")
        if p.is_file() and p.name != "server.log" and "runtime" not in p.parts
    )
    out: dict[str, Any] = {"files": files}
    for name in files:
        if name.endswith("history.sqlite"):
            with contextlib.closing(sqlite3.connect(server.tmp / name)) as conn:
                out["history_inputs"] = conn.execute("SELECT count(*) FROM history").fetchone()[0]
                out["history_outputs"] = conn.execute("SELECT count(*) FROM output_history").fetchone()[0]
    return out
