"""The table of `make bench-peers`: one row per workload, vm-system against each peer column.

Columns: the measure; vm-system; ipykernel with Jupyter's defaults / with TCP_NODELAY; the Deno
kernel the same two ways; each peer's value / vm-system's (in the order of the peer columns);
and whether vm-system is ahead of all four peer columns, or which it is behind or level with.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common import fmt_num  # bench/ is on the path (servers.py puts it there)
from workloads import Counts

SIDES = ["vm-system", "ipykernel", "ipykernel+nodelay", "deno", "deno+nodelay"]
PEERS = SIDES[1:]


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False


def rows(counts: Counts) -> list[Row]:
    return [
        Row("round_trip", "round trip 1+1, p50", "ms"),
        Row("stateful", "stateful round trip (n += 1), p50", "ms"),
        Row("first_line", "first line of 20 logged, p50", "ms"),
        Row("flood_lines", f"flood of {counts.flood:,} lines: lines received", "lines", True),
        Row("flood_time", f"flood of {counts.flood:,} lines: time to its end and last line", "s"),
        Row("start", "session/kernel start to its first result, p50", "ms"),
        Row("memory_1", "idle memory per session, 1 session (PSS)", "MB"),
        Row("memory_n", f"idle memory per session, {counts.sessions} sessions (PSS)", "MB"),
        Row("concurrent", f"{counts.clients} clients x 1+1: executions/s", "exec/s", True),
    ]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """One side's value per row key from its rounds: latencies pooled, per-round figures' median
    (NaN for every key when no round of the side succeeded)."""

    def pooled(key: str) -> list[float]:
        return [v for r in rounds for v in r[key] if v is not None]

    return {
        "round_trip": median(pooled("round_trip_s")) * 1000,
        "stateful": median(pooled("stateful_s")) * 1000,
        "first_line": median(pooled("first_line_s")) * 1000,
        "flood_lines": median([r["flood"]["lines"] for r in rounds]),
        "flood_time": median([r["flood"]["seconds"] for r in rounds]),
        "start": median(pooled("start_s")) * 1000,
        "memory_1": median([r["memory_1"]["pss_per_session_mb"] for r in rounds]),
        "memory_n": median([r["memory_n"]["pss_per_session_mb"] for r in rounds]),
        "concurrent": median([r["concurrent"]["per_s"] for r in rounds]),
    }


def fmt(v: float) -> str:
    return "-" if math.isnan(v) else fmt_num(v)


def verdict(row: Row, values: dict[str, float]) -> str:
    vm = values["vm-system"]
    if math.isnan(vm):
        return "no result for vm-system"
    behind, level, missing = [], [], []
    for peer in PEERS:
        other = values[peer]
        if math.isnan(other):
            missing.append(peer)
        elif other == vm:
            level.append(peer)
        elif (other > vm) == row.higher_is_better:
            behind.append(peer)
    if not behind and not level and not missing:
        return "ahead"
    parts = [] if behind or level else ["ahead of the others"]
    if behind:
        parts.append("BEHIND " + ", ".join(behind))
    if level:
        parts.append("level with " + ", ".join(level))
    if missing:
        parts.append("no result for " + ", ".join(missing))
    return "; ".join(parts)


def table(summaries: dict[str, dict[str, float]], counts: Counts) -> tuple[str, list[dict[str, Any]]]:
    """The printed table and its rows as data."""
    header = [
        "measure",
        "vm-system",
        "ipykernel default / nodelay",
        "deno default / nodelay",
        "peer / vm-system",
        "vm-system is",
    ]
    cells: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for row in rows(counts):
        values = {side: summaries[side][row.key] for side in SIDES}
        vm = values["vm-system"]
        ratios = {peer: (values[peer] / vm if vm else float("nan")) for peer in PEERS}
        unit = f" {row.unit}"
        cells.append(
            [
                row.label + (" (higher is better)" if row.higher_is_better else ""),
                fmt(vm) + unit,
                f"{fmt(values['ipykernel'])} / {fmt(values['ipykernel+nodelay'])}{unit}",
                f"{fmt(values['deno'])} / {fmt(values['deno+nodelay'])}{unit}",
                " / ".join(fmt(ratios[p]) for p in PEERS),
                verdict(row, values),
            ]
        )
        data.append(
            {"key": row.key, "measure": row.label, "unit": row.unit, "values": values, "ratios": ratios}
        )
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines), data


def failure_notes(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The rounds that failed, and why (their figures are missing from the table)."""
    return [
        f"{side}, round {i + 1}: FAILED: {r['error']}; the server's log ends: {' | '.join(r['log'][-3:])}"
        for side, rounds in results.items()
        for i, r in enumerate(rounds)
        if "error" in r
    ]


def flood_notes(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What the floods showed besides their numbers: lines that came after the end, server notices."""
    notes = []
    for side in PEERS:
        floods = [r["flood"] for r in results[side]]
        late = [f["late_lines"] for f in floods]
        if any(late):
            notes.append(
                f"{side}: of the flood lines received, {', '.join(f'{n:,}' for n in late)} (per round) "
                "arrived after the execution had ended (after `status: idle`), where JupyterLab has "
                "closed the cell's output; they are counted as received, and the time runs to the last."
            )
        notices = sorted({n for f in floods for n in f["notices"]})
        if notices:
            notes.append(
                f"{side}: during the flood Jupyter Server said {'; '.join(notices)!r}: "
                "its default IOPub limits (1,000 messages/s, 1 MB/s over 3 s) dropped the rest."
            )
    return notes


def persistence_notes(done: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What each side kept on disk after its last successful round, in words."""
    last = {side: rounds[-1]["persisted"] if rounds else {} for side, rounds in done.items()}
    vm, ipy, deno = last["vm-system"], last["ipykernel"], last["deno"]
    if not vm:
        return []
    deno_files = sorted({re.sub(r"(-wal|-shm)$", "", f) for f in deno.get("files", [])})
    return [
        f"vm-system persists every execution and every event in its database: after one round, "
        f"{vm['executions']:,} executions and {vm['events']:,} events in vm.db "
        f"({vm['bytes'] / 1e6:.1f} MB, the flood included), readable by cursor and replayed to any "
        "WebSocket that subscribes; the JavaScript state of a session lives in its worker's memory "
        "(and its checkpoint's).",
        f"ipykernel keeps kernel state in memory only; IPython writes the code of every cell to its "
        f"history database ({ipy.get('history_inputs', 0):,} inputs, "
        f"{ipy.get('history_outputs', 0)} outputs in history.sqlite): no output, value or "
        "stream is kept, by the kernel or by Jupyter Server.",
        "The Deno kernel keeps nothing of the session: its only files are Deno's module-analysis "
        f"caches ({', '.join(f.split('/')[-1] for f in deno_files) or 'none'}).",
        "Jupyter Server writes nothing of a kernel to disk (its runtime directory holds the "
        "connection files, removed with the kernel); a kernel's state and output end with it.",
    ]
