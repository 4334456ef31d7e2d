"""Concurrency: REPL throughput with 16 concurrent clients on 16 sessions.

Each client loops ``POST /executions/repl {"input": "1+1"}`` on its own session (its own
keep-alive connection) for a fixed time; all 16 run in one client process (a separate process
from the server). Reported: executions per second and the latency p50/p99 over all requests,
plus the CPU used by the server process, the workers and the client (to see which one saturates
the 2 cores). Informational: no target.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    ClientProcess,
    Result,
    base_parser,
    create_session,
    proc_cpu_s,
    run_main,
    self_cpu_s,
    summary,
    vm_server,
)

PROGRAM = "concurrency"


async def concurrent_repl(
    url: str, session_ids: list[str], duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """Client process: one loop per session; latencies of requests that started after warm-up."""
    import aiohttp
    import orjson

    endpoint = url + "/api/v1/executions/repl"
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    errors: list[str] = []
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s

    async def one(http: aiohttp.ClientSession, sid: str) -> None:
        body = orjson.dumps({"session_id": sid, "input": "1+1"})
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            async with http.post(endpoint, data=body, headers=headers) as resp:
                data = await resp.read()
                if resp.status != 201:
                    errors.append(f"{resp.status}: {data[:200]!r}")
                    if len(errors) > 20:
                        raise RuntimeError(f"too many errors: {errors[:3]}")
                    continue
            t1 = time.perf_counter()
            if t0 >= t_measure:
                lat.append(t1 - t0)

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(one(http, sid) for sid in session_ids))
    return {"latencies": lat, "measured_s": duration_s, "errors": errors}


async def run(args: Any) -> tuple[list[Result], dict[str, Any]]:
    from server.client import VmClient

    async with ClientProcess(inproc=args.inproc_client) as client, vm_server() as vm, VmClient(vm.url) as c:
        tpl = await c.create_template("bench-concurrency")
        sessions = [await create_session(c, tpl["id"], vm.worktree) for _ in range(args.clients)]
        sids = [s["id"] for s in sessions]
        pids = [int(s["runtime_meta"]["worker_pid"]) for s in sessions]
        cpu0, w0, t0 = self_cpu_s(), sum(proc_cpu_s(p) for p in pids), time.monotonic()
        out = await client.run(concurrent_repl, vm.url, sids, args.seconds, args.warmup_s)
        wall = time.monotonic() - t0
        server_cpu, worker_cpu = self_cpu_s() - cpu0, sum(proc_cpu_s(p) for p in pids) - w0
        for s in sids:
            await c.close_session(s)
    res = out["result"]
    lat = summary(res["latencies"], scale=1000)
    rate = lat["count"] / res["measured_s"]
    raw = {
        "clients": args.clients,
        "seconds": args.seconds,
        "latency_ms": lat,
        "executions_per_s": round(rate, 1),
        "errors": res["errors"],
        "cpu_share_of_wall": {  # 1.0 = one core busy for the whole run (warm-up included)
            "server_process": round(server_cpu / wall, 3),
            "workers": round(worker_cpu / wall, 3),
            "client_process": round(out["client_cpu_s"] / out["client_wall_s"], 3),
        },
    }
    rows = [
        Result(f"{args.clients} clients x 1+1: throughput", round(rate, 1), "exec/s"),
        Result(f"{args.clients} clients x 1+1: latency p50", lat["p50"], "ms"),
        Result(f"{args.clients} clients x 1+1: latency p99", lat["p99"], "ms"),
    ]
    return rows, raw


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=1.5)
    run_main(PROGRAM, p, run)


if __name__ == "__main__":
    main()
