"""The WebSocket execution path against REST, the first output line, and what logging costs.

(a) Round trip: ``execute {"input": "1+1"}`` over one WebSocket until ``complete`` against
``POST /executions/repl`` over one keep-alive connection, same server, same client process,
alternating rounds. Target: WebSocket p50 <= 1.0x REST p50.
(b) First output line: ``execute`` of a loop that logs, until its first ``console`` event
arrives at the client. Floor: the bare handler of ``repl_roundtrip.py`` (QuickJS over a pipe,
one SQLite commit) measured in the same run. Targets: p50 <= 2x that floor, p99 <= 10 ms.
(c) 16 clients, each on its own session: executions per second over WebSockets against REST in
the same run. Target: WebSocket >= 1.0x REST.
(d) Logging: a real ``vm-system serve`` process with its default log level (INFO: one access
line per request) against the same at WARNING, 16 REST clients. Target: INFO >= 0.9x WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    ROOT,
    ClientProcess,
    Result,
    base_parser,
    free_port,
    repl_loop,
    run_main,
    setup_session,
    summary,
    vm_server,
)
from concurrency import concurrent_repl  # noqa: E402
from repl_roundtrip import floor_server  # noqa: E402

PROGRAM = "ws_path"
FIRST_LINE = "for (let i = 0; i < 20; i++) console.log('line', i); 'done'"


async def ws_loop(url: str, session_id: str, n: int, code: str, until: str) -> list[float]:
    """Client process: ``n`` sequential ``execute`` messages on one socket; the time from each
    send to its first ``console`` event (``until="first_line"``) or to ``complete``."""
    import aiohttp
    import orjson

    out: list[float] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/api/v1/ws", heartbeat=None) as ws:
        for i in range(n):
            t0 = time.perf_counter()
            await ws.send_str(
                orjson.dumps({"type": "execute", "id": i, "session_id": session_id, "input": code}).decode()
            )
            first = None
            while True:
                msg = orjson.loads((await ws.receive()).data)
                kind = msg["type"]
                if kind == "events" and first is None and any(e["type"] == "console" for e in msg["events"]):
                    first = time.perf_counter() - t0
                elif kind == "complete":
                    break
                elif kind == "error":
                    raise RuntimeError(f"server error: {msg}")
            out.append(first if until == "first_line" else time.perf_counter() - t0)
    return out


async def ws_concurrent(
    url: str, session_ids: list[str], duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """Client process: one WebSocket per session, ``execute`` in a loop for ``duration_s``."""
    import aiohttp
    import orjson

    lat: list[float] = []
    t_measure = time.perf_counter() + warmup_s
    t_end = t_measure + duration_s

    async def one(http: aiohttp.ClientSession, sid: str) -> None:
        async with http.ws_connect(url + "/api/v1/ws", heartbeat=None) as ws:
            i = 0
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                i += 1
                await ws.send_str(
                    orjson.dumps({"type": "execute", "id": i, "session_id": sid, "input": "1+1"}).decode()
                )
                while True:
                    msg = orjson.loads((await ws.receive()).data)
                    if msg["type"] == "complete":
                        break
                    if msg["type"] == "error":
                        raise RuntimeError(f"server error: {msg}")
                if t0 >= t_measure:
                    lat.append(time.perf_counter() - t0)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(one(http, sid) for sid in session_ids))
    return {"latencies": lat, "measured_s": duration_s}


def _start(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


@contextlib.asynccontextmanager
async def serve_process(level: str) -> AsyncIterator[tuple[str, Path]]:
    """A real ``vm-system serve`` on a free port at log level ``level``; yields (url, worktree)."""
    import aiohttp

    tmp = Path(tempfile.mkdtemp(prefix="vm-bench-serve-"))
    work = tmp / "work"
    work.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "server.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--db", str(tmp / "vm.db"), "--cache-dir", str(tmp / "cache"), "--log-level", level]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
    proc = _start(cmd, env, tmp / "serve.log")
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url + "/api/v1/health") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield url, work
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def throughput(client: ClientProcess, func: Any, url: str, sids: list[str], args: Any) -> float:
    out = await client.run(func, url, sids, args.seconds, args.warmup_s)
    return len(out["result"]["latencies"]) / out["result"]["measured_s"]


async def sessions(url: str, worktree: Path, n: int) -> list[str]:
    from server.client import VmClient

    async with VmClient(url) as c:
        tpl = await c.create_template(f"bench-ws-{time.monotonic_ns()}")
        return [
            (
                await c.create_session(
                    template_id=tpl["id"], workspace_id="b", base_commit_oid="0", worktree_path=str(worktree)
                )
            )["id"]
            for _ in range(n)
        ]


async def run(args: Any) -> tuple[list[Result], dict[str, Any]]:
    rows: list[Result] = []
    raw: dict[str, Any] = {}
    async with ClientProcess(inproc=args.inproc_client) as client, vm_server() as vm:
        async with floor_server(vm.tmp) as floor:
            _, sid = await setup_session(vm.url, vm.worktree)
            await client.run(repl_loop, vm.url, sid, args.warmup, 0)
            await client.run(ws_loop, vm.url, sid, args.warmup, "1+1", "complete")
            await client.run(repl_loop, floor["url"], floor["session_id"], args.warmup, 0)
            rest: list[float] = []
            ws: list[float] = []
            first: list[float] = []
            floor_rt: list[float] = []
            for r in range(args.rounds):
                order = ["rest", "ws", "first", "floor"]
                for name in order if r % 2 == 0 else reversed(order):
                    if name == "rest":
                        rest += (await client.run(repl_loop, vm.url, sid, args.n, 0))["result"]
                    elif name == "ws":
                        ws += (await client.run(ws_loop, vm.url, sid, args.n, "1+1", "complete"))["result"]
                    elif name == "first":
                        first += (
                            await client.run(ws_loop, vm.url, sid, args.n // 2, FIRST_LINE, "first_line")
                        )["result"]
                    else:
                        floor_rt += (
                            await client.run(repl_loop, floor["url"], floor["session_id"], args.n, 0)
                        )["result"]
        r_rest, r_ws = summary(rest, scale=1000), summary(ws, scale=1000)
        r_first, r_floor = summary(first, scale=1000), summary(floor_rt, scale=1000)
        raw.update(rest_ms=r_rest, ws_ms=r_ws, first_line_ms=r_first, floor_ms=r_floor)
        ratio = r_ws["p50"] / r_rest["p50"]
        rows.append(
            Result(
                "WebSocket execute round trip p50 vs REST",
                r_ws["p50"],
                "ms",
                r_rest["p50"],
                ratio,
                "ratio <= 1.0",
                ratio <= 1.0,
            )
        )
        ratio = r_first["p50"] / r_floor["p50"]
        rows.append(
            Result(
                "first output line over WebSocket p50 vs REPL floor",
                r_first["p50"],
                "ms",
                r_floor["p50"],
                ratio,
                "ratio <= 2",
                ratio <= 2,
            )
        )
        rows.append(
            Result(
                "first output line over WebSocket p99",
                r_first["p99"],
                "ms",
                target="<= 10 ms",
                ok=r_first["p99"] <= 10,
            )
        )

        sids = await sessions(vm.url, vm.worktree, args.clients)
        rates = {"rest": 0.0, "ws": 0.0}
        for r in range(2):
            for name in ("rest", "ws") if r == 0 else ("ws", "rest"):
                func = concurrent_repl if name == "rest" else ws_concurrent
                rates[name] = max(rates[name], await throughput(client, func, vm.url, sids, args))
        raw["concurrent_exec_per_s"] = rates
        ratio = rates["ws"] / rates["rest"]
        rows.append(
            Result(
                f"{args.clients} WebSocket clients vs REST clients",
                round(rates["ws"]),
                "exec/s",
                round(rates["rest"]),
                ratio,
                "ratio >= 1.0",
                ratio >= 1.0,
            )
        )

        levels: dict[str, float] = {}
        for level in ("WARNING", "INFO", "WARNING", "INFO"):
            async with serve_process(level) as (url, work):
                level_sids = await sessions(url, work, args.clients)
                rate = await throughput(client, concurrent_repl, url, level_sids, args)
            levels[level] = max(levels.get(level, 0.0), rate)
        raw["log_levels_exec_per_s"] = levels
        ratio = levels["INFO"] / levels["WARNING"]
        rows.append(
            Result(
                f"{args.clients} REST clients, serve at INFO vs WARNING",
                round(levels["INFO"]),
                "exec/s",
                round(levels["WARNING"]),
                ratio,
                "ratio >= 0.9",
                ratio >= 0.9,
            )
        )
    return rows, raw


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--n", type=int, default=300, help="requests per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=1.0)
    run_main(PROGRAM, p, run)


if __name__ == "__main__":
    main()
