"""Isolation: ``1+1`` round trips in session A, idle versus while session B spins.

Session B's template has cpu_ms = wall_ms = 0 (unlimited); B runs ``while(true){}`` started with
``wait: false`` and is cancelled (``POST /executions/{id}/cancel``) at the end of each busy round,
which kills and rebuilds its worker. Session A's client (a separate process, one keep-alive
connection, sequential requests) measures round trips in alternating idle and busy rounds.
The floor is A's own idle p99 from the same run. Target: busy p99 / idle p99 <= 2.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    UNLIMITED,
    ClientProcess,
    Result,
    base_parser,
    proc_cpu_s,
    repl_loop,
    run_main,
    setup_session,
    summary,
    vm_server,
    worker_pid,
)

PROGRAM = "isolation"


async def wait_ready(c: Any, session_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """Until the session is ready and takes a new execution (after a cancel-triggered reset)."""
    deadline = time.monotonic() + timeout_s
    while True:
        s = await c.get_session(session_id)
        if s["status"] == "ready":
            try:
                ex = await c.repl(session_id, "0")
                if ex["status"] == "ok":
                    return await c.get_session(session_id)
            except Exception:  # noqa: BLE001 - SESSION_BUSY while the reset finishes
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"session {session_id} did not become ready: {s['status']}")
        await asyncio.sleep(0.05)


async def run(args: Any) -> tuple[list[Result], dict[str, Any]]:
    from server.client import VmClient

    raw: dict[str, Any] = {"rounds": []}
    idle: list[float] = []
    busy: list[float] = []
    async with ClientProcess(inproc=args.inproc_client) as client, vm_server() as vm:
        _, sid_a = await setup_session(vm.url, vm.worktree)
        _, sid_b = await setup_session(vm.url, vm.worktree, limits=UNLIMITED)
        async with VmClient(vm.url) as c:
            await client.run(repl_loop, vm.url, sid_a, args.warmup, 0)
            for r in range(args.rounds):
                # idle round
                out = await client.run(repl_loop, vm.url, sid_a, args.n, 0)
                idle.extend(out["result"])
                raw["rounds"].append({"round": r, "kind": "idle", **summary(out["result"], scale=1000)})
                # busy round: B spins on the other core (or on ours)
                pid_b = await worker_pid(vm.url, sid_b)
                spin = await c.repl(sid_b, "while (true) {}", wait=False)
                await asyncio.sleep(0.2)
                cpu0, t0 = proc_cpu_s(pid_b), time.monotonic()
                out = await client.run(repl_loop, vm.url, sid_a, args.n, 0)
                spin_cpu = (proc_cpu_s(pid_b) - cpu0) / (time.monotonic() - t0)
                cancelled = await c.cancel_execution(spin["id"])
                busy.extend(out["result"])
                raw["rounds"].append(
                    {
                        "round": r,
                        "kind": "busy",
                        "spinner_cpu_share": round(spin_cpu, 3),
                        "spinner_status": cancelled["status"],
                        **summary(out["result"], scale=1000),
                    }
                )
                await wait_ready(c, sid_b)
    i = summary(idle, scale=1000)
    b = summary(busy, scale=1000)
    raw["idle_ms"] = i
    raw["busy_ms"] = b
    ratio = b["p99"] / i["p99"]
    rows = [
        Result(
            "isolation: 1+1 p99, B spinning vs idle",
            b["p99"],
            "ms",
            i["p99"],
            ratio,
            "ratio <= 2",
            ratio <= 2,
        ),
        Result("isolation: 1+1 p50, B spinning vs idle", b["p50"], "ms", i["p50"], b["p50"] / i["p50"]),
    ]
    return rows, raw


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--n", type=int, default=500, help="requests per round")
    p.add_argument("--rounds", type=int, default=2, help="idle+busy round pairs")
    p.add_argument("--warmup", type=int, default=200)
    run_main(PROGRAM, p, run)


if __name__ == "__main__":
    main()
