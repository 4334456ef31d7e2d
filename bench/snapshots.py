"""Snapshots (API.md §11): fork latency, rollback time after a kill, and what checkpoints cost.

- Fork: ``POST /api/v1/sessions/{id}/fork`` of a session holding some state, timed like a session
  create measured in the same run (the floor). Targets: fork p50 <= 10 ms and <= create p50.
- Rollback: a session spins in ``while (true) {}``; the bench SIGKILLs its worker and times how
  long until a queued ``1+1`` answers. Target: p50 within 50 ms of the kill.
- Checkpoint cost, with heaps of about 1, 50 and 200 MB: the REPL round trip (``1+1``) p50 on a
  server with checkpoints on against a server with them off (the floor; both up at once, measured
  in alternating rounds), and idle memory
  per session (PSS of the worker plus its checkpoint) against a session without checkpoints.
  Targets (API.md §11 / issue 11): round trip <= 2x and memory <= 2x of the checkpoint-less floor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    ClientProcess,
    Result,
    base_parser,
    create_session,
    repl_loop,
    run_main,
    summary,
    vm_server,
)
from sessions import descendants, memory_of  # noqa: E402

PROGRAM = "snapshots"
# Objects of about 300 bytes each on the QuickJS heap (measured: PSS grows ~1 MB per 3,300).
HEAP = (
    "var heap = []; for (let i = 0; i < {n}; i++) heap.push({{i, s: 'item ' + i, o: {{v: i}}}}); heap.length"
)
OBJECTS_PER_MB = 3300
ROUNDS = 4  # alternating rounds of the heap round trips


async def forks(c: Any, vm: Any, args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    tpl = await c.create_template("bench-fork")
    creates: list[float] = []
    for _ in range(args.samples):
        t0 = time.perf_counter()
        s = await create_session(c, tpl["id"], vm.worktree)
        creates.append(time.perf_counter() - t0)
        await c.close_session(s["id"])
    parent = await create_session(c, tpl["id"], vm.worktree)
    await c.repl(parent["id"], HEAP.format(n=OBJECTS_PER_MB))
    times: list[float] = []
    for _ in range(args.samples):
        t0 = time.perf_counter()
        f = await c.request("POST", f"/sessions/{parent['id']}/fork", body={})
        times.append(time.perf_counter() - t0)
        await c.close_session(f["id"])
    return summary(times, scale=1000), summary(creates, scale=1000)


async def rollbacks(c: Any, vm: Any, args: Any) -> dict[str, Any]:
    tpl = await c.create_template("bench-rollback")
    await c.update_template(tpl["id"], settings={"limits": {"cpu_ms": 0, "wall_ms": 60_000}})
    s = await create_session(c, tpl["id"], vm.worktree)
    await c.repl(s["id"], "var kept = 1")
    times: list[float] = []
    for _ in range(args.kills):
        await c.repl(s["id"], "0")  # its answer follows the checkpoint of the state above
        spin = await c.repl(s["id"], "console.log('spinning'); while (true) {}", wait=False)
        for _ in range(5000):  # the input echo, then the line: it is spinning now
            if len(await c.request("GET", f"/executions/{spin['id']}/events")) >= 2:
                break
            await asyncio.sleep(0.002)
        pid = int((await c.get_session(s["id"]))["runtime_meta"]["worker_pid"])
        body = {"session_id": s["id"], "input": "kept + 1", "queue": True}
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        answer = await c.request("POST", "/executions/repl", body=body)
        times.append(time.perf_counter() - t0)
        assert answer["result"]["json"] == 2, answer
    return summary(times, scale=1000)


async def heap_costs(client: ClientProcess, args: Any) -> dict[str, Any]:
    """Both servers up at once (checkpoints on and off), the same heap in a session of each, and
    their round trips measured in alternating rounds, so that a slow phase hits both."""
    from server.client import VmClient

    out: dict[str, Any] = {}
    async with (
        vm_server(checkpoints=False) as off,
        vm_server(checkpoints=True) as on,
        VmClient(off.url) as c_off,
        VmClient(on.url) as c_on,
    ):
        sides = {"off": (off, c_off), "on": (on, c_on)}
        templates = {}
        for name, (_vm, c) in sides.items():
            tpl = await c.create_template("bench-heap")
            # Room for the biggest heap (the default mem_mb, 128, would stop it short).
            await c.update_template(tpl["id"], settings={"limits": {"mem_mb": 1024, "wall_ms": 60000}})
            templates[name] = tpl["id"]
        for mb in args.heaps:
            sessions: dict[str, str] = {}
            for name, (vm, c) in sides.items():
                s = await create_session(c, templates[name], vm.worktree)
                sessions[name] = s["id"]
                if mb > 1:
                    built = await c.repl(s["id"], HEAP.format(n=mb * OBJECTS_PER_MB))
                    if built["status"] != "ok":
                        raise RuntimeError(f"building a {mb} MB heap failed: {built.get('error')}")
                await client.run(repl_loop, vm.url, s["id"], args.warmup, 0)
            samples: dict[str, list[float]] = {"off": [], "on": []}
            for r in range(ROUNDS):
                for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    vm = sides[name][0]
                    got = await client.run(repl_loop, vm.url, sessions[name], args.n // ROUNDS, 0)
                    samples[name] += got["result"]
            await asyncio.sleep(args.settle)
            for name, (_vm, c) in sides.items():
                pid = int((await c.get_session(sessions[name]))["runtime_meta"]["worker_pid"])
                mem = memory_of([descendants(pid)])
                out[f"{name}_{mb}mb"] = {
                    "roundtrip_ms": summary(samples[name], scale=1000),
                    "pss_total_mb": mem["pss_total_mb"],
                    "processes": len(descendants(pid)),
                }
                await c.close_session(sessions[name])
    return out


async def run(args: Any) -> tuple[list[Result], dict[str, Any]]:
    from server.client import VmClient

    rows: list[Result] = []
    raw: dict[str, Any] = {}
    async with vm_server() as vm, VmClient(vm.url) as c:
        fork, create = await forks(c, vm, args)
        raw["fork_ms"], raw["create_ms"] = fork, create
        rows.append(Result("fork p50", fork["p50"], "ms", target="<= 10 ms", ok=fork["p50"] <= 10))
        rows.append(
            Result(
                "fork p50 vs session create p50",
                fork["p50"],
                "ms",
                create["p50"],
                fork["p50"] / create["p50"],
                "ratio <= 1",
                fork["p50"] <= create["p50"],
            )
        )
        rows.append(Result("fork p99", fork["p99"], "ms", create["p99"], fork["p99"] / create["p99"]))
        back = await rollbacks(c, vm, args)
        raw["rollback_ms"] = back
        rows.append(
            Result(
                "rollback: kill to 1+1 answered, p50",
                back["p50"],
                "ms",
                target="<= 50 ms",
                ok=back["p50"] <= 50,
            )
        )
        rows.append(Result("rollback: kill to 1+1 answered, p99", back["p99"], "ms"))
    async with ClientProcess(inproc=args.inproc_client) as client:
        costs = await heap_costs(client, args)
    raw["heaps"] = costs
    for mb in args.heaps:
        on, off = costs[f"on_{mb}mb"], costs[f"off_{mb}mb"]
        rt_on, rt_off = on["roundtrip_ms"]["p50"], off["roundtrip_ms"]["p50"]
        ratio = rt_on / rt_off
        rows.append(
            Result(
                f"REPL round trip p50, {mb} MB heap, checkpoints on/off",
                rt_on,
                "ms",
                rt_off,
                ratio,
                "ratio <= 2",
                ratio <= 2,
            )
        )
        m_on, m_off = on["pss_total_mb"], off["pss_total_mb"]
        rows.append(
            Result(
                f"idle PSS/session, {mb} MB heap, checkpoints on/off",
                m_on,
                "MB",
                m_off,
                m_on / m_off,
                "ratio <= 2",
                m_on / m_off <= 2,
            )
        )
    raw["note"] = "fork/create/rollback in ms; PSS of the worker and its checkpoint (its descendants)"
    return rows, raw


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--samples", type=int, default=30, help="forks and creates timed")
    p.add_argument("--kills", type=int, default=10, help="rollbacks timed")
    p.add_argument("--heaps", type=int, nargs="+", default=[1, 50, 200], help="heap sizes in MB")
    p.add_argument("--n", type=int, default=200, help="REPL round trips per heap size")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--settle", type=float, default=0.5, help="seconds idle before reading memory")
    run_main(PROGRAM, p, run)


if __name__ == "__main__":
    main()
