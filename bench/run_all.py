"""Run every benchmark program as a subprocess and print one table of their rows.

Each program measures its own floor in the same run and writes ``bench/results/<program>.json``;
this runner collects those files, prints ``measure | value | floor | ratio | target | ok/MISS``
and writes ``bench/results/summary.json``. Exit status 0 even when a target is missed (the table
says so); 1 when a program failed to produce its results.

    .venv/bin/python bench/run_all.py [--only streaming isolation] [--inproc-client]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS_DIR, ROOT, environment, format_table  # noqa: E402

PROGRAMS = [
    "repl_roundtrip",
    "ws_path",
    "streaming",
    "isolation",
    "sessions",
    "concurrency",
    "snapshots",
    "wal",
    "cluster",
]
TIMEOUT_S = 150  # per program; the whole suite is sized for about 2-3 minutes


def run_program(name: str, extra: list[str]) -> dict[str, Any]:
    path = RESULTS_DIR / f"{name}.json"
    path.unlink(missing_ok=True)  # never report a previous run's numbers
    cmd = [sys.executable, str(ROOT / "bench" / f"{name}.py"), *extra]
    t0 = time.monotonic()
    print(f"== {name} ...", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = -1, exc.stdout or "", f"timed out after {TIMEOUT_S} s"
        out = out.decode() if isinstance(out, bytes) else out
    elapsed = time.monotonic() - t0
    status: dict[str, Any] = {"program": name, "exit_code": code, "seconds": round(elapsed, 1)}
    if code == 0 and path.exists():
        doc = json.loads(path.read_text())
        status["rows"] = [{**r, "program": name} for r in doc["rows"]]
        print(f"   done in {elapsed:.1f} s", flush=True)
    else:
        tail = "\n".join((err or out or "").strip().splitlines()[-15:])
        status["error"] = tail
        status["rows"] = [
            {
                "program": name,
                "measure": f"{name}: FAILED",
                "value": None,
                "unit": "",
                "floor": None,
                "ratio": None,
                "target": "runs",
                "ok": False,
                "note": f"exit {code}",
            }
        ]
        print(f"   FAILED (exit {code}) after {elapsed:.1f} s:\n{tail}", flush=True)
    return status


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=PROGRAMS, help="run only these programs")
    p.add_argument("--inproc-client", action="store_true", help="passed through to every program")
    args = p.parse_args()
    extra = ["--inproc-client"] if args.inproc_client else []
    started = time.monotonic()
    statuses = [run_program(name, extra) for name in (args.only or PROGRAMS)]
    rows = [r for s in statuses for r in s["rows"]]
    total = time.monotonic() - started
    print()
    print(format_table(rows))
    missed = [r["measure"] for r in rows if r.get("ok") is False]
    n_ok = sum(1 for r in rows if r.get("ok"))
    print(f"\n{len(rows)} rows, {n_ok} ok, {len(missed)} MISS; total {total:.0f} s")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    summary = {
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(total, 1),
        "environment": environment(),
        "programs": [{k: v for k, v in s.items() if k != "rows"} for s in statuses],
        "rows": rows,
        "missed": missed,
    }
    (RESULTS_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(s["exit_code"] == 0 for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
