"""Cluster: forwarding, cross-node live latency and throughput, against the same work on one node.

Two real ``vm-system serve`` processes (node A and node B) on a fresh PostgreSQL database; the
session lives on A. The client is this process (the servers are other processes).

(a) REPL round trip, forwarded: ``POST /executions/repl {"input": "1+1"}`` sent to B (which
forwards it to A) against the same request sent to A directly, in alternating rounds on one
keep-alive connection each. Target: forwarded p50 / direct p50 <= 2.
(b) Live latency across nodes: a script on A logs one line every 10 ms; a WebSocket client on B
follows it. Latency = arrival time at the client - the event's ``ts`` (taken in A's worker when
``console.log`` ran; same machine clock). Targets p50 <= 10 ms, p99 <= 50 ms. The same measure
with the client on A is reported beside it.
(c) Streaming throughput across nodes: a flood of console lines on A, followed by a WebSocket
client on B, against the same flood followed on A (interleaved runs, medians). Rate = events /
(send of ``execute`` -> arrival of the last event). Target: cross-node / same-node >= 0.5.
(d) What the cluster adds to each PostgreSQL commit: the store's execution create + finalize
(as one REPL commits them), with and without the change notices, in this process. Report.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    API,
    PG_URL,
    ROOT,
    UNLIMITED,
    Result,
    base_parser,
    pg_reachable,
    pg_schema,
    repl_loop,
    run_main,
    setup_session,
    summary,
)

PROGRAM = "cluster"
FLOOD = "for (let i = 0; i < {n}; i++) console.log('line ' + i)"
TICKER = (
    "let __i = 0; const __h = setInterval(() => {{"
    " console.log('tick ' + __i); if (++__i >= {n}) clearInterval(__h); }}, {every})"
)


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A PostgreSQL database of its own (NOTIFY channels are per database), dropped afterwards."""
    import psycopg

    name = f"vm_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def spawn(name: str, db: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a ``vm-system serve`` process on a free port; (process, URL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "server.cli", "serve", "--listen", f"127.0.0.1:{port}", "--db", db]
    cmd += ["--cache-dir", str(tmp / "cache"), "--node-id", name, "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
    with open(tmp / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@asynccontextmanager
async def node(name: str, db: str, tmp: Path) -> AsyncIterator[str]:
    """A node of the cluster; yields its URL once it answers."""
    import aiohttp

    proc, url = spawn(name, db, tmp)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if proc.poll() is not None:
                    raise RuntimeError(f"node {name} exited (see its log)")
                try:
                    async with http.get(url + API + "/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield url
    finally:
        stop(proc)


async def ws_execute(url: str, session_id: str, code: str, expect: int, timeout_s: float) -> dict[str, Any]:
    """``execute`` over a WebSocket on ``url``, read until ``complete``; rate and latencies."""
    import aiohttp

    count = 0
    latencies: list[float] = []
    t_last = None
    async with aiohttp.ClientSession() as http, http.ws_connect(url + API + "/ws", max_msg_size=0) as ws:
        t0 = time.perf_counter()
        await ws.send_str(
            orjson.dumps({"type": "execute", "id": 1, "session_id": session_id, "input": code}).decode()
        )
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"socket closed after {count} events: {msg.type}")
                arrived, t_last = time.time(), time.perf_counter()
                data = orjson.loads(msg.data)
                if data["type"] == "events":
                    count += len(data["events"])
                    for e in data["events"]:
                        if e["type"] == "console":
                            latencies.append(arrived - _epoch(e["ts"]))
                elif data["type"] == "complete":
                    break
                elif data["type"] == "error":
                    raise RuntimeError(f"server error: {data}")
    if count != expect:
        raise RuntimeError(f"expected {expect} events, received {count}")
    seconds = (t_last or time.perf_counter()) - t0
    return {"events": count, "seconds": seconds, "rate": count / seconds, "latencies": latencies}


def _epoch(ts: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


async def notify_cost(n: int) -> dict[str, Any]:
    """(d): an execution created and finalized n times, with and without change notices."""
    from server.config import normalize_db_url
    from server.store.store import Store

    out: dict[str, Any] = {}
    with pg_schema(PG_URL) as url:
        st = Store(normalize_db_url(url))
        await st.open()
        try:
            session_id = str(uuid.uuid4())
            await st.create_session(
                row={
                    "id": session_id,
                    "vm_id": str(uuid.uuid4()),
                    "workspace_id": "bench",
                    "base_commit_oid": "x",
                    "worktree_path": "/tmp",
                    "status": "ready",
                    "created_at": "2026-01-01T00:00:00.000000Z",
                    "closed_at": None,
                    "last_error": None,
                    "runtime_meta": {},
                    "node_id": "bench",
                }
            )
            next_id = 1
            for rnd in range(4):  # alternate, so that slow phases hit both
                for notify in (False, True) if rnd % 2 == 0 else (True, False):
                    st.notify_as = "bench" if notify else None
                    samples = []
                    for _ in range(n):
                        t0 = time.perf_counter()
                        eid = str(uuid.uuid4())
                        row = {
                            "id": eid,
                            "session_id": session_id,
                            "kind": "repl",
                            "input": "1+1",
                            "path": None,
                            "args": {},
                            "env": {},
                            "status": "running",
                            "started_at": "2026-01-01T00:00:00.000000Z",
                            "metrics": {},
                        }
                        echo = (next_id, eid, 1, row["started_at"], "input_echo", '{"text":"1+1"}')
                        value = (next_id + 1, eid, 2, row["started_at"], "value", '{"type":"number"}')
                        next_id += 2
                        await st.create_execution(row=row, events=[echo])
                        fin = {
                            "id": eid,
                            "session_id": session_id,
                            "status": "ok",
                            "ended_at": row["started_at"],
                        }
                        await st.write_batch(
                            events=[value], finalize=[{**fin, "result": None, "metrics": {}}]
                        )
                        samples.append(time.perf_counter() - t0)
                    out.setdefault("with" if notify else "without", []).extend(samples)
        finally:
            await st.close()
    return {k: summary(v, scale=1000) for k, v in out.items()}


async def run(args: Any) -> tuple[list[Result], dict[str, Any]]:
    raw: dict[str, Any] = {}
    rows: list[Result] = []
    reason = pg_reachable(PG_URL)
    if reason is not None:
        return [Result("cluster (PostgreSQL)", None, "", note=f"skipped: {reason}")], {"skipped": reason}
    tmp = Path(tempfile.mkdtemp(prefix="vm-bench-cluster-"))
    worktree = tmp / "worktree"
    worktree.mkdir()
    try:
        async with fresh_database() as db, node("bench-a", db, tmp) as a, node("bench-b", db, tmp) as b:
            _, sid = await setup_session(a, worktree)
            _, flood_sid = await setup_session(a, worktree, limits=UNLIMITED)

            # (a) forwarded vs direct REPL round trip
            await repl_loop(a, sid, args.warmup)
            await repl_loop(b, sid, args.warmup)
            direct: list[float] = []
            forwarded: list[float] = []
            for r in range(args.rounds):
                order = [(a, direct), (b, forwarded)]
                for url, into in order if r % 2 == 0 else reversed(order):
                    into.extend(await repl_loop(url, sid, args.n))
            d, f = summary(direct, scale=1000), summary(forwarded, scale=1000)
            raw["repl_direct_ms"], raw["repl_forwarded_ms"] = d, f
            ratio = f["p50"] / d["p50"]
            rows.append(
                Result(
                    "REPL round trip p50, forwarded vs direct",
                    f["p50"],
                    "ms",
                    d["p50"],
                    ratio,
                    "ratio <= 2",
                    ratio <= 2,
                )
            )
            rows.append(
                Result(
                    "REPL round trip p99, forwarded vs direct", f["p99"], "ms", d["p99"], f["p99"] / d["p99"]
                )
            )

            # (b) live latency, client on the other node (and on the same node, for reference)
            await ws_execute(b, sid, TICKER.format(n=20, every=10), 22, 60)
            lat: dict[str, dict[str, Any]] = {}
            for where, url in (("cross-node", b), ("same node", a)):
                out = await ws_execute(
                    url, sid, TICKER.format(n=args.ticks, every=10), args.ticks + 2, args.ticks * 0.01 + 60
                )
                lat[where] = summary(out["latencies"], scale=1000)
            raw["latency_ms"] = lat
            cross = lat["cross-node"]
            rows.append(
                Result(
                    "console.log -> WS on another node p50",
                    cross["p50"],
                    "ms",
                    lat["same node"]["p50"],
                    target="<= 10 ms",
                    ok=cross["p50"] <= 10,
                )
            )
            rows.append(
                Result(
                    "console.log -> WS on another node p99",
                    cross["p99"],
                    "ms",
                    lat["same node"]["p99"],
                    target="<= 50 ms",
                    ok=cross["p99"] <= 50,
                )
            )

            # (c) streaming throughput, cross-node vs same node
            n_events = args.lines + 2
            await ws_execute(a, flood_sid, FLOOD.format(n=2000), 2002, 60)
            await ws_execute(b, flood_sid, FLOOD.format(n=2000), 2002, 60)
            same: list[float] = []
            other: list[float] = []
            for r in range(args.runs):
                order = [(a, same), (b, other)]
                for url, into in order if r % 2 == 0 else reversed(order):
                    into.append(
                        (await ws_execute(url, flood_sid, FLOOD.format(n=args.lines), n_events, 240))["rate"]
                    )
            raw["throughput_same_node"], raw["throughput_cross_node"] = same, other
            med_same, med_other = statistics.median(same), statistics.median(other)
            ratio = med_other / med_same
            rows.append(
                Result(
                    f"streaming {n_events:,} events, cross-node vs same node",
                    round(med_other),
                    "events/s",
                    round(med_same),
                    ratio,
                    "ratio >= 0.5",
                    ratio >= 0.5,
                )
            )
        # (d) the cost of the notices on a commit pair
        cost = await notify_cost(args.commits)
        raw["store_commit_pair_ms"] = cost
        rows.append(
            Result(
                "PostgreSQL REPL commits p50, with NOTIFY vs without",
                cost["with"]["p50"],
                "ms",
                cost["without"]["p50"],
                cost["with"]["p50"] / cost["without"]["p50"],
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw["note"] = "latencies in ms; throughputs in events/s"
    return rows, raw


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--n", type=int, default=300, help="requests per REPL round")
    p.add_argument("--rounds", type=int, default=4, help="alternating direct/forwarded rounds")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ticks", type=int, default=300, help="lines of the 10 ms ticker")
    p.add_argument("--lines", type=int, default=50_000, help="lines of the flood")
    p.add_argument("--runs", type=int, default=3, help="flood runs on each side")
    p.add_argument("--commits", type=int, default=200, help="commit pairs per round of (d)")
    run_main(PROGRAM, p, run)


if __name__ == "__main__":
    main()
