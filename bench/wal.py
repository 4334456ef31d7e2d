"""The SQLite write-ahead log after a burst: it must give its space back once writes pause.

A burst of ``--executions`` (30,000) REPL executions over 16 WebSockets, some of which log 100
lines, for ``--events`` (200,000) stored events in all; then writes pause. Reported: the WAL
file at the end of the burst (its peak), the WAL after ``--idle`` seconds without writes
(target: <= 64 MB: checkpoints complete and truncate it, docs/performance.md), and the
database file, which holds the data.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    UNLIMITED,
    ClientProcess,
    Result,
    base_parser,
    create_session,
    run_main,
    vm_server,
)

PROGRAM = "wal"
CLIENTS = 16
LINES = 100  # lines of each logging execution
TARGET_MB = 64


async def burst(url: str, session_ids: list[str], plan: list[list[bool]]) -> dict[str, Any]:
    """Client process: each socket runs its plan of executions (True: one that logs LINES)."""
    import aiohttp
    import orjson

    counts = {"executions": 0, "events": 0}
    logging = f"for (let i = 0; i < {LINES}; i++) console.log('line ' + i); 'logged'"

    async def one(http: aiohttp.ClientSession, sid: str, steps: list[bool]) -> None:
        async with http.ws_connect(url + "/api/v1/ws", heartbeat=None, max_msg_size=0) as ws:
            for i, logs in enumerate(steps):
                code = logging if logs else f"{i} * 2"
                await ws.send_str(
                    orjson.dumps({"type": "execute", "id": i, "session_id": sid, "input": code}).decode()
                )
                while True:
                    msg = orjson.loads((await ws.receive()).data)
                    if msg["type"] == "events":
                        counts["events"] += len(msg["events"])
                    elif msg["type"] == "complete":
                        break
                    elif msg["type"] == "error":
                        raise RuntimeError(f"server error: {msg}")
                counts["executions"] += 1

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(one(http, sid, steps) for sid, steps in zip(session_ids, plan, strict=True)))
    return counts


def sizes(db_path: Path) -> tuple[int, int]:
    wal = Path(str(db_path) + "-wal")
    return (db_path.stat().st_size, wal.stat().st_size if wal.exists() else 0)


def make_plan(executions: int, events: int) -> list[list[bool]]:
    """Which executions log: each stores 2 events (echo, value), a logging one LINES more."""
    logging = max(0, (events - 2 * executions) // LINES)
    flags = [i * logging // executions != (i + 1) * logging // executions for i in range(executions)]
    return [flags[c::CLIENTS] for c in range(CLIENTS)]


async def run(args: Any) -> tuple[list[Result], dict[str, Any]]:
    from server.client import VmClient

    mb = 1024 * 1024
    async with ClientProcess(inproc=args.inproc_client, timeout_s=900) as client, vm_server() as vm:
        db_path = Path(vm.db_url.split("sqlite:///", 1)[-1])
        async with VmClient(vm.url) as c:
            tpl = await c.create_template("bench-wal")
            await c.update_template(tpl["id"], settings={"limits": UNLIMITED})
            sids = [(await create_session(c, tpl["id"], vm.worktree))["id"] for _ in range(CLIENTS)]
        t0 = time.perf_counter()
        out = await client.run(burst, vm.url, sids, make_plan(args.executions, args.events))
        burst_s = time.perf_counter() - t0
        db_peak, wal_peak = sizes(db_path)
        await asyncio.sleep(args.idle)
        db_after, wal_after = sizes(db_path)
    counts = out["result"]
    raw = {
        "executions": counts["executions"],
        "events": counts["events"],
        "burst_s": round(burst_s, 2),
        "wal_at_end_of_burst_bytes": wal_peak,
        "wal_after_idle_bytes": wal_after,
        "db_bytes": db_after,
        "idle_s": args.idle,
    }
    what = f"{counts['executions']:,} executions, {counts['events']:,} events"
    rows = [
        Result(
            f"WAL after a burst ({what}) and {args.idle:g} s idle",
            round(wal_after / mb, 2),
            "MB",
            target=f"<= {TARGET_MB} MB",
            ok=wal_after <= TARGET_MB * mb,
        ),
        Result("WAL at the end of the burst", round(wal_peak / mb, 2), "MB"),
        Result("database file after the burst", round(db_after / mb, 2), "MB"),
        Result("burst rate", round(counts["executions"] / burst_s), "exec/s"),
    ]
    return rows, raw


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--executions", type=int, default=30_000)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--idle", type=float, default=3.0, help="seconds without writes before measuring")
    run_main(PROGRAM, p, run)


if __name__ == "__main__":
    main()
