"""The workloads of `make bench-peers`, written once for every side (``kernels.Kernel``).

One call of ``one_round(server, counts)`` runs them all on a fresh server, in this order:

1. start a first session/kernel and warm it up (``counts.warmup`` round trips), then its idle
   memory: PSS of the server's whole process tree (server, kernels / workers, checkpoints) / 1;
2. start ``counts.starts`` more one after another, each timed from the create request to its
   first result (``1+1`` answered over its own WebSocket); the rest of ``counts.sessions`` (20)
   are opened at once, untimed; idle memory again, / 20;
3. ``counts.clients`` (16) clients, one per session/kernel, each looping ``1+1`` over its WebSocket for
   ``counts.seconds`` after ``counts.warmup_s``: executions per second;
4. close all but the first; on the first: ``counts.n`` round trips of ``1+1``, ``counts.n``
   stateful round trips (``n += 1``: reads and writes session state), ``counts.first``
   executions that log 20 lines (time to the first line), one flood of ``counts.flood``
   (100,000) lines (lines received; time until the execution has ended and its last line has
   arrived).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from kernels import Kernel, open_kernel
from servers import Server
from sessions import smaps_rollup


@dataclass(frozen=True)
class Code:
    round_trip: str
    state_init: str
    state_step: str
    first_line: str
    flood: str


CODE = {
    "js": Code(
        round_trip="1+1",
        state_init="var n = 0",
        state_step="n += 1",
        first_line="for (let i = 0; i < 20; i++) console.log('line', i)",
        flood="for (let i = 0; i < {lines}; i++) console.log('line ' + i)",
    ),
    "python": Code(
        round_trip="1+1",
        state_init="n = 0",
        state_step="n += 1\nn",
        first_line="for i in range(20):\n    print('line', i)",
        flood="for i in range({lines}):\n    print('line', i)",
    ),
}


@dataclass(frozen=True)
class Counts:
    warmup: int = 30
    n: int = 60
    first: int = 20
    starts: int = 6
    sessions: int = 20
    clients: int = 16
    seconds: float = 4.0
    warmup_s: float = 1.0
    flood: int = 100_000
    settle: float = 1.0
    linger: float = 1.0  # after the flood: wait for output that comes after its end until this quiet


async def timed_start(server: Server) -> tuple[Kernel, float]:
    """Open a session/kernel; seconds from the create request to its first result."""
    t0 = time.perf_counter()
    kernel = await open_kernel(server)
    await kernel.execute("1+1")
    return kernel, time.perf_counter() - t0


def memory(server: Server, sessions: int) -> dict[str, Any]:
    """PSS and RSS of the server's process tree, in MB, in total and per session."""
    pss = rss = server_pss = 0
    counted = 0
    for pid in server.processes():
        try:
            maps = smaps_rollup(pid)
        except OSError:  # gone between the listing and the read
            continue
        counted += 1
        pss += maps.get("Pss", 0)
        rss += maps.get("Rss", 0)
        if pid == server.pid:
            server_pss = maps.get("Pss", 0)
    return {
        "sessions": sessions,
        "processes": counted,
        "pss_mb": round(pss / 1024, 2),
        "rss_mb": round(rss / 1024, 2),
        "server_process_pss_mb": round(server_pss / 1024, 2),
        "pss_per_session_mb": round(pss / 1024 / sessions, 2),
    }


async def concurrent(kernels: list[Kernel], code: str, seconds: float, warmup_s: float) -> dict[str, Any]:
    """Each kernel loops ``code`` until the end; executions that started after the warm-up count."""
    t_measure = time.perf_counter() + warmup_s
    t_end = t_measure + seconds
    latencies: list[float] = []

    async def loop(kernel: Kernel) -> None:
        while (t0 := time.perf_counter()) < t_end:
            outcome = await kernel.execute(code)
            if t0 >= t_measure:
                latencies.append(outcome.seconds)

    await asyncio.gather(*(loop(k) for k in kernels))
    return {"executions": len(latencies), "per_s": round(len(latencies) / seconds, 1), "latencies": latencies}


async def one_round(server: Server, counts: Counts, phase: dict[str, str]) -> dict[str, Any]:
    """Every workload once on ``server``; raw samples (seconds, MB, counts). ``phase["now"]``
    names the workload under way, for the report of a round that fails."""
    code = CODE[server.language]
    out: dict[str, Any] = {}
    phase["now"] = "the first start"
    first, out["start_first_s"] = await timed_start(server)
    for _ in range(counts.warmup):
        await first.execute(code.round_trip)
    await asyncio.sleep(counts.settle)
    out["memory_1"] = memory(server, 1)

    phase["now"] = "the starts"
    others: list[Kernel] = []
    out["start_s"] = []
    for _ in range(counts.starts):
        kernel, seconds = await timed_start(server)
        others.append(kernel)
        out["start_s"].append(seconds)
    rest = counts.sessions - 1 - counts.starts
    others += [k for k, _ in await asyncio.gather(*(timed_start(server) for _ in range(rest)))]
    await asyncio.sleep(counts.settle)
    out["memory_n"] = memory(server, counts.sessions)

    phase["now"] = "the concurrent clients"
    clients = [first, *others][: counts.clients]
    out["concurrent"] = await concurrent(clients, code.round_trip, counts.seconds, counts.warmup_s)
    await asyncio.gather(*(k.close() for k in others))
    await asyncio.sleep(counts.settle)  # let the closed ones go before timing the first alone

    phase["now"] = "the round trips"
    out["round_trip_s"] = [(await first.execute(code.round_trip)).seconds for _ in range(counts.n)]
    await first.execute(code.state_init)
    out["stateful_s"] = [(await first.execute(code.state_step)).seconds for _ in range(counts.n)]
    check = await first.execute("n", linger=5.0, until="value")
    if (check.value or check.late_value) != str(counts.n):
        raise RuntimeError(f"{server.kind}: the state did not hold: n is {check.value!r}, not {counts.n}")
    out["late_values"] = int(bool(check.late_value))
    phase["now"] = "the first lines"
    out["first_line_s"] = []
    for _ in range(counts.first):
        outcome = await first.execute(code.first_line, linger=counts.linger, until="first_line")
        out["first_line_s"].append(outcome.first_line)
    phase["now"] = "the flood"
    flood = await first.execute(code.flood.format(lines=counts.flood), linger=counts.linger)
    out["flood"] = {
        "lines": flood.lines + flood.late_lines,
        "late_lines": flood.late_lines,  # arrived after the end of the execution (status idle)
        "seconds": max(flood.seconds, flood.last_line or 0.0),
        "end_s": flood.seconds,
        "notices": sorted(set(flood.notices)),
    }
    await first.close()
    return out
