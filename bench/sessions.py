"""Sessions: creation latency and idle memory per session at 1, 10 and 100 live sessions.

For each N: create N sessions one after another (``POST /api/v1/sessions``, a template with no
startup files or libraries) over one keep-alive connection and time each request; with all N
alive and idle, read ``/proc/<pid>/smaps_rollup`` of every worker (pid from the session's
``runtime_meta.worker_pid``) and of its checkpoint (the worker's child), summed per session:
PSS (``Pss``) and USS (``Private_Clean + Private_Dirty``); then
close them all (N=1 and N=10 are repeated until 20 creations are timed). Workers are forked
from a warm zygote, so most of the engine is shared copy-on-write:
PSS charges each worker its share of those pages.
Targets: creation p50 <= 50 ms; mean PSS per session <= 20 MB.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Result, base_parser, create_session, run_main, summary, vm_server  # noqa: E402

PROGRAM = "sessions"


def smaps_rollup(pid: int) -> dict[str, int]:
    """kB values of /proc/<pid>/smaps_rollup."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def descendants(pid: int) -> list[int]:
    """The process and everything below it (a worker, its checkpoint, an exec helper)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory_of(groups: list[list[int]]) -> dict[str, Any]:
    """Memory per group of processes (one group per session: its worker and its checkpoint)."""
    pss, uss, rss = [], [], []
    for pids in groups:
        maps = [smaps_rollup(pid) for pid in pids]
        pss.append(sum(m.get("Pss", 0) for m in maps) / 1024)
        uss.append(sum(m.get("Private_Clean", 0) + m.get("Private_Dirty", 0) for m in maps) / 1024)
        rss.append(sum(m.get("Rss", 0) for m in maps) / 1024)
    return {
        "pss_mb": summary(pss, digits=3),
        "uss_mb": summary(uss, digits=3),
        "rss_mb": summary(rss, digits=3),
        "pss_total_mb": round(sum(pss), 2),
    }


async def run(args: Any) -> tuple[list[Result], dict[str, Any]]:
    from server.client import VmClient

    rows: list[Result] = []
    raw: dict[str, Any] = {}
    async with vm_server() as vm, VmClient(vm.url) as c:
        tpl = await c.create_template("bench-sessions")

        async def create() -> tuple[float, dict[str, Any]]:
            t0 = time.perf_counter()
            s = await create_session(c, tpl["id"], vm.worktree)
            return time.perf_counter() - t0, s

        for _ in range(args.warmup):  # warm the zygote, the store and the connection
            _, s = await create()
            await c.close_session(s["id"])

        for n in args.counts:
            # Small N are repeated (create N, measure, close) so that their p50 has samples.
            trials = max(1, args.min_samples // n)
            times: list[float] = []
            close_s = 0.0
            mem: dict[str, Any] = {}
            for trial in range(trials):
                sessions: list[dict[str, Any]] = []
                try:
                    for _ in range(n):
                        dt, s = await create()
                        times.append(dt)
                        sessions.append(s)
                    if trial == trials - 1:
                        await asyncio.sleep(args.settle)
                        # Each session's worker and its checkpoint (and anything else it runs).
                        mem = memory_of([descendants(int(s["runtime_meta"]["worker_pid"])) for s in sessions])
                finally:
                    t0 = time.perf_counter()
                    for s in sessions:
                        await c.close_session(s["id"])
                    close_s += time.perf_counter() - t0
            created = summary(times, scale=1000)
            raw[f"n{n}"] = {
                "trials": trials,
                "create_ms": created,
                "close_ms_mean": round(close_s * 1000 / len(times), 3),
                **mem,
            }
            p50 = created["p50"]
            rows.append(Result(f"session create p50 (N={n})", p50, "ms", target="<= 50 ms", ok=p50 <= 50))
            pss = mem["pss_mb"]["mean"]
            rows.append(
                Result(f"idle memory PSS/session (N={n})", pss, "MB", target="<= 20 MB", ok=pss <= 20)
            )
            rows.append(Result(f"idle memory USS/session (N={n})", mem["uss_mb"]["mean"], "MB"))
    raw["note"] = "create_ms: latency of POST /sessions; memory in MB per worker process"
    return rows, raw


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-samples", type=int, default=20, help="repeat small N until this many creations")
    p.add_argument("--settle", type=float, default=0.5, help="seconds idle before reading memory")
    run_main(PROGRAM, p, run)


if __name__ == "__main__":
    main()
