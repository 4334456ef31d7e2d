"""Shared helpers for the benchmark programs in ``bench/``.

Every program measures its own floor in the same run and prints ratios, because the machine the
numbers come from is small and noisy: an absolute number means little, a ratio against a bare
implementation measured a few seconds earlier means a lot more.

Pieces:
- ``vm_server()``: a real vm-system server (``create_app``) on ``web.AppRunner``/``TCPSite`` on
  127.0.0.1 with a free port, on a SQLite file in a temporary directory or on a PostgreSQL URL;
- ``pg_schema()``: a fresh PostgreSQL schema for one run (skipped when PostgreSQL is unreachable);
- ``ClientProcess``: runs a client coroutine in a separate (spawned) process so that client work
  does not share the server's event loop and GIL (``--inproc-client`` runs it in the server's loop);
- ``summary()`` / ``percentile()``: latency statistics;
- ``Result``, ``write_results()`` and ``run_main()``: the row type, ``bench/results/<program>.json``
  and every program's ``main()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("VM_SYSTEM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
API = "/api/v1"


# ---------------------------------------------------------------------------------------------
# Result rows


@dataclass
class Result:
    """One row of the summary table.

    ``floor`` is in the same unit as ``value`` (None when the measure has no floor); ``ratio`` is
    value/floor (or its inverse for a throughput, see the program); ``target`` is a human-readable
    rule such as ``ratio <= 2``, ``<= 50 ms`` or ``report``; ``ok`` is None for report-only rows.
    """

    measure: str
    value: float | None
    unit: str
    floor: float | None = None
    ratio: float | None = None
    target: str = "report"
    ok: bool | None = None
    note: str = ""


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "MISS")


def fmt_num(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def format_table(rows: Sequence[Result | dict[str, Any]], *, program_col: bool = False) -> str:
    """Plain-text table: measure | value | floor | ratio | target | ok/MISS."""
    header = ["measure", "value", "floor", "ratio", "target", "ok"]
    if program_col:
        header.insert(0, "program")
    lines: list[list[str]] = []
    for r in rows:
        d = asdict(r) if isinstance(r, Result) else r
        unit = d.get("unit") or ""
        val = "-" if d.get("value") is None else f"{fmt_num(d['value'])} {unit}".strip()
        flo = "-" if d.get("floor") is None else f"{fmt_num(d['floor'])} {unit}".strip()
        rat = "-" if d.get("ratio") is None else f"{d['ratio']:.2f}"
        cells = [d["measure"], val, flo, rat, d.get("target") or "report", verdict(d.get("ok"))]
        if program_col:
            cells.insert(0, d.get("program", ""))
        if d.get("note") and d.get("value") is None:
            cells[-2] = f"{cells[-2]} ({d['note']})"
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out.extend(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in lines)
    return "\n".join(out)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


def write_results(
    program: str, rows: Sequence[Result], raw: dict[str, Any], started: float, *, args: Any = None
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{program}.json"
    doc = {
        "program": program,
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(time.monotonic() - started, 2),
        "environment": environment(),
        "args": vars(args) if args is not None else {},
        "rows": [asdict(r) for r in rows],
        "raw": raw,
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def report(program: str, rows: Sequence[Result], raw: dict[str, Any], started: float, args: Any) -> None:
    path = write_results(program, rows, raw, started, args=args)
    print(format_table(rows))
    print(f"\n{program}: {time.monotonic() - started:.1f} s, results in {path.relative_to(ROOT)}")


def base_parser(doc: str) -> argparse.ArgumentParser:
    """The options every program takes; its description is the first line of ``doc``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument(
        "--inproc-client",
        action="store_true",
        help="run the load-generating client in the server's own event loop instead of a separate process",
    )
    return p


def run_main(
    program: str,
    parser: argparse.ArgumentParser,
    run: Callable[[Any], Coroutine[Any, Any, tuple[list[Result], dict[str, Any]]]],
) -> None:
    """A program's ``main()``: parse its options, ``run(args)``, print and write the results."""
    args = parser.parse_args()
    started = time.monotonic()
    rows, raw = asyncio.run(run(args))
    report(program, rows, raw, started, args)


# ---------------------------------------------------------------------------------------------
# Statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def summary(values: Sequence[float], *, scale: float = 1.0, digits: int = 4) -> dict[str, Any]:
    """count, p50, p90, p99, mean, min, max (values multiplied by ``scale``)."""
    s = sorted(v * scale for v in values)
    if not s:
        return {"count": 0}
    return {
        "count": len(s),
        "p50": round(percentile(s, 50), digits),
        "p90": round(percentile(s, 90), digits),
        "p99": round(percentile(s, 99), digits),
        "mean": round(sum(s) / len(s), digits),
        "min": round(s[0], digits),
        "max": round(s[-1], digits),
    }


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class BenchServer:
    url: str
    tmp: Path
    db_url: str
    app: Any
    worktree: Path
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def vm_server(db_url: str | None = None, **overrides: Any) -> AsyncIterator[BenchServer]:
    """Start vm-system in this process on 127.0.0.1:<free port>; SQLite in a temp dir by default."""
    from server.app import create_app
    from server.config import Settings

    tmp = Path(tempfile.mkdtemp(prefix="vm-bench-"))
    worktree = tmp / "worktree"
    worktree.mkdir()
    settings = Settings.from_env(
        {},
        db_url=db_url or str(tmp / "vm.db"),
        cache_dir=str(tmp / "cache"),
        log_level="WARNING",
        **overrides,
    )
    app = create_app(settings)
    try:
        async with serve(app) as url:
            yield BenchServer(url, tmp, settings.db_url, app, worktree)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an aiohttp application on 127.0.0.1:<free port>; yields its base URL."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def pg_reachable(url: str = PG_URL) -> str | None:
    """None when PostgreSQL answers, otherwise the reason."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


@contextlib.contextmanager
def pg_schema(url: str = PG_URL) -> Any:
    """Yield a URL whose search_path is a fresh schema; the schema is dropped afterwards."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def setup_session(
    base_url: str, worktree: Path, *, limits: dict[str, Any] | None = None, name: str | None = None
) -> tuple[str, str]:
    """Create a template (optionally with limits) and one session; return (template_id, session_id)."""
    from server.client import VmClient

    async with VmClient(base_url) as c:
        tpl = await c.create_template(name or f"bench-{uuid.uuid4().hex[:8]}")
        if limits:
            await c.update_template(tpl["id"], settings={"limits": limits})
        sess = await create_session(c, tpl["id"], worktree)
        return tpl["id"], sess["id"]


async def create_session(c: Any, template_id: str, worktree: Path) -> dict[str, Any]:
    """One session of the template through the VmClient ``c``."""
    return await c.create_session(
        template_id=template_id, workspace_id="bench", base_commit_oid="0" * 40, worktree_path=str(worktree)
    )


async def worker_pid(base_url: str, session_id: str) -> int:
    """The pid of the session's JS worker (from ``runtime_meta``)."""
    from server.client import VmClient

    async with VmClient(base_url) as c:
        return int((await c.get_session(session_id))["runtime_meta"]["worker_pid"])


UNLIMITED = {"cpu_ms": 0, "wall_ms": 0, "max_events": 0, "max_output_kb": 0}


# ---------------------------------------------------------------------------------------------
# Client processes


def _client_entry(func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> dict[str, Any]:
    """Runs in the client process: one coroutine, plus its CPU and wall time."""
    cpu0, t0 = self_cpu_s(), time.perf_counter()
    return _client_result(asyncio.run(func(*args)), cpu0, t0)


def _client_result(result: Any, cpu0: float, t0: float) -> dict[str, Any]:
    """A client run's answer: its result, and the CPU and wall time since ``cpu0`` and ``t0``."""
    return {
        "result": result,
        "client_cpu_s": round(self_cpu_s() - cpu0, 4),
        "client_wall_s": round(time.perf_counter() - t0, 4),
    }


class ClientProcess:
    """A warm spawned process that runs client coroutines one at a time.

    ``await cp.run(func, *args)`` returns ``{"result", "client_cpu_s", "client_wall_s"}``;
    ``func`` must be a module-level coroutine function (it is pickled by reference).
    With ``inproc=True`` the coroutine runs in the caller's loop instead (no isolation).
    """

    def __init__(self, *, inproc: bool = False, timeout_s: float = 180.0) -> None:
        self.inproc = inproc
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None

    async def __aenter__(self) -> ClientProcess:
        if not self.inproc:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            await self.run(_noop)  # pay the spawn and imports before anything is timed
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def run(self, func: Callable[..., Awaitable[Any]], *args: Any) -> dict[str, Any]:
        if self._pool is None:
            # In process, client_cpu_s includes the server's CPU too.
            cpu0, t0 = self_cpu_s(), time.perf_counter()
            return _client_result(await asyncio.wait_for(func(*args), self.timeout_s), cpu0, t0)
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, _client_entry, func, args)
        return await asyncio.wait_for(fut, self.timeout_s)


async def _noop() -> None:
    import aiohttp  # noqa: F401 - warm the import
    import orjson  # noqa: F401


async def repl_loop(url: str, session_id: str, n: int, warmup: int = 0, code: str = "1+1") -> list[float]:
    """Sequential ``POST /executions/repl`` on one keep-alive connection; latencies in seconds."""
    import aiohttp
    import orjson

    body = orjson.dumps({"session_id": session_id, "input": code})
    headers = {"Content-Type": "application/json"}
    endpoint = url + API + "/executions/repl"
    out: list[float] = []
    timeout = aiohttp.ClientTimeout(total=30)
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as http:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            async with http.post(endpoint, data=body, headers=headers) as resp:
                data = await resp.read()
                status = resp.status
            dt = time.perf_counter() - t0
            if status != 201:
                raise RuntimeError(f"repl answered {status}: {data[:300]!r}")
            if i >= warmup:
                out.append(dt)
    return out


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user+system) a process has used, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


# ---------------------------------------------------------------------------------------------
# Floors: the same tables as the server, written with plain sqlite3


def floor_db(path: Path) -> tuple[Any, str]:
    """Create the server's schema (from its SQLModel tables) in a fresh SQLite file.

    Returns a plain ``sqlite3`` connection (WAL, synchronous=NORMAL, foreign keys on, as the
    server's own connections) and the id of one session row to hang executions on.
    """
    import sqlite3

    from sqlalchemy import create_engine
    from sqlmodel import SQLModel

    import server.store.models  # noqa: F401 - registers the tables

    engine = create_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    session_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO sessions (id, vm_id, workspace_id, base_commit_oid, worktree_path, status,"
        " created_at, runtime_meta) VALUES (?, ?, 'bench', 'x', '/tmp', 'ready', ?, '{}')",
        (session_id, str(uuid.uuid4()), now_iso()),
    )
    return conn, session_id


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


EXECUTION_INSERT = (
    "INSERT INTO executions (id, session_id, kind, input, path, args, env, status, started_at,"
    " ended_at, result, error, metrics) VALUES (?, ?, ?, ?, NULL, '{}', '{}', ?, ?, ?, ?, NULL, ?)"
)
EVENT_INSERT = "INSERT INTO events (id, execution_id, seq, ts, type, payload) VALUES (?, ?, ?, ?, ?, ?)"
