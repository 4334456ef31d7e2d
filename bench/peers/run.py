"""`make bench-peers`: vm-system against Jupyter Server with ipykernel and with the Deno kernel.

Five sides: vm-system (``vm-system serve``, its defaults), and Jupyter Server with ipykernel and
with the Deno kernel, each once with Jupyter's defaults and once with TCP_NODELAY on the kernel
WebSocket (``jupyter_nodelay_config.py``). Every side is a subprocess on a fresh temp dir; this
process is the client of all of them. Each round starts every side's server afresh and runs
every workload on it (``workloads.py``), the sides in a rotated order from round to round;
latencies are pooled over the rounds, per-round figures are reduced to their median.
Prints one table (``report.py``) and notes on what each side persists; writes
``bench/results/peers.json``. Needs the peer environment (``bench/peers/.env``), which
``make bench-peers`` builds.

    .venv/bin/python bench/peers/run.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import servers  # noqa: E402  (also puts bench/ on the path)
from common import RESULTS_DIR, environment, summary  # noqa: E402
from report import SIDES, failure_notes, flood_notes, persistence_notes, summarize, table  # noqa: E402
from workloads import Counts, one_round  # noqa: E402

QUICK = Counts(warmup=5, n=10, first=3, starts=2, sessions=4, clients=4, seconds=1.0, flood=5_000, settle=0.3)
SIDE_TIMEOUT_S = 300.0  # one side's round; a hung kernel costs this much, not the whole run


def server_for(side: str, tmp: Path) -> Any:
    if side == "vm-system":
        return servers.vm_system(tmp)
    kernel = "python3" if side.startswith("ipykernel") else "deno"
    return servers.jupyter(tmp, kernel, nodelay=side.endswith("+nodelay"))


async def run_side(side: str, counts: Counts) -> dict[str, Any]:
    """One round of one side; ``{"error", "log"}`` instead of its figures when it failed."""
    t0 = time.monotonic()
    phase: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        try:
            async with asyncio.timeout(SIDE_TIMEOUT_S), server_for(side, Path(tmp)) as server:
                out = await one_round(server, counts, phase)
            out["persisted"] = servers.persisted(server)  # after the stop: flushed and checkpointed
        except Exception as exc:  # noqa: BLE001 - reported in the table; the other sides go on
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return {
                "error": f"{error} (during {phase.get('now', 'the server start')})",
                "seconds": round(time.monotonic() - t0, 1),
                "log": servers.log_tail(Path(tmp)),
            }
    out["seconds"] = round(time.monotonic() - t0, 1)
    conc = out["concurrent"]
    conc["latency_ms"] = summary(conc.pop("latencies"), scale=1000)
    return out


async def run(args: argparse.Namespace, counts: Counts) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    sides = [side for side in SIDES if side in args.sides]
    for r in range(args.rounds):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        for side in order:
            print(f"round {r + 1}/{args.rounds}: {side} ...", end=" ", flush=True)
            out = await run_side(side, counts)
            results[side].append(out)
            if "error" in out:
                print(f"FAILED after {out['seconds']} s: {out['error']}", flush=True)
                continue
            notices = "; ".join(out["flood"]["notices"])
            print(f"{out['seconds']} s" + (f" (the server said: {notices})" if notices else ""), flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny counts, to check that everything runs")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=SIDES, help="run only these sides")
    args = p.parse_args()
    problem = servers.missing_environment()
    if problem:
        print(f"bench-peers: {problem}", file=sys.stderr)
        return 2
    counts = QUICK if args.quick else Counts()
    started = time.monotonic()
    load_before = os.getloadavg()
    results = asyncio.run(run(args, counts))
    done = {side: [r for r in rounds if "error" not in r] for side, rounds in results.items()}
    summaries = {side: summarize(rounds) for side, rounds in done.items()}
    text, rows = table(summaries, counts)
    notes = failure_notes(results) + flood_notes(done) + persistence_notes(done)
    total = time.monotonic() - started
    print()
    print(text)
    print()
    for note in notes:
        print(textwrap.fill(note, 100, initial_indent="- ", subsequent_indent="  "))
    print(
        f"\n{args.rounds} rounds, {total:.0f} s; load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "program": "peers",
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(total, 1),
        "environment": environment(),
        "counts": asdict(counts),
        "rows": rows,
        "notes": notes,
        "rounds": results,
    }
    path = RESULTS_DIR / "peers.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"results in {path.relative_to(servers.ROOT)}")
    return 1 if any("error" in r for rounds in results.values() for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
