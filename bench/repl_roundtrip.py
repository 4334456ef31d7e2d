"""REPL round trip: ``POST /api/v1/executions/repl {"input": "1+1"}`` against its floor.

Floor (measured in the same run, same client, same process as the server): a bare aiohttp
handler on its own port that decodes the same JSON, sends the input to a minimal QuickJS worker
process over a socket (one line each way) and commits one execution row plus three event rows
with plain ``sqlite3`` in one transaction (the server's own tables, WAL, synchronous=NORMAL,
foreign keys on), then answers the execution as JSON.

The client runs in a separate process (one keep-alive connection, sequential requests, warm-up
first). Floor and system are measured in alternating rounds so slow phases of the machine hit
both. Target: system p50 / floor p50 <= 2.

On PostgreSQL (VM_SYSTEM_TEST_PG; skipped with a note when unreachable) the floor is the same
bare handler committing what the server commits there, with psycopg's async connection on the
event loop: the execution row with its input echo, then the value and the closing update, in two
transactions. Target: system p50 / PostgreSQL floor p50 <= 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    EVENT_INSERT,
    EXECUTION_INSERT,
    PG_URL,
    ClientProcess,
    Result,
    base_parser,
    floor_db,
    now_iso,
    pg_reachable,
    pg_schema,
    proc_cpu_s,
    repl_loop,
    run_main,
    self_cpu_s,
    serve,
    setup_session,
    summary,
    vm_server,
    worker_pid,
)

PROGRAM = "repl_roundtrip"

# The floor's worker: a loop around one QuickJS context, one JSON line in, one JSON line out.
FLOOR_WORKER = r"""
import json, socket, sys
import quickjs
ctx = quickjs.Context()
sock = socket.socket(fileno=int(sys.argv[1]))
rfile = sock.makefile("rb")
for line in rfile:
    src = json.loads(line)["input"]
    try:
        v = ctx.eval(src)
        out = {"ok": True, "type": type(v).__name__, "preview": str(v), "json": v}
    except Exception as exc:
        out = {"ok": False, "message": str(exc)}
    sock.sendall(json.dumps(out).encode() + b"\n")
"""


@contextlib.asynccontextmanager
async def floor_server(tmp: Path) -> AsyncIterator[dict[str, Any]]:
    """The bare handler on its own port, with its worker process and its SQLite file."""
    from aiohttp import web

    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOR_WORKER,
        str(theirs.fileno()),
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=mine)
    db, session_id = floor_db(tmp / "floor.db")
    lock = asyncio.Lock()
    ids = itertools.count(1)

    async def repl(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        src = body["input"]
        exec_id = str(uuid.uuid4())
        started = now_iso()
        async with lock:
            writer.write(orjson.dumps({"input": src}) + b"\n")
            line = await reader.readline()
        out = orjson.loads(line)
        ended = now_iso()
        value = {"type": "number", "preview": out["preview"], "json": out["json"]}
        events = [
            (next(ids), exec_id, 1, started, "input_echo", orjson.dumps({"text": src}).decode()),
            (next(ids), exec_id, 2, ended, "value", orjson.dumps(value).decode()),
            (next(ids), exec_id, 3, ended, "system", '{"level":"info","message":"ok"}'),
        ]
        metrics = orjson.dumps({"wall_ms": 0, "cpu_ms": 0, "event_count": 3, "output_bytes": 0}).decode()
        result = orjson.dumps(value).decode()
        db.execute("BEGIN")
        db.execute(
            EXECUTION_INSERT, (exec_id, session_id, "repl", src, "ok", started, ended, result, metrics)
        )
        db.executemany(EVENT_INSERT, events)
        db.execute("COMMIT")
        execution = {
            "id": exec_id,
            "session_id": session_id,
            "kind": "repl",
            "input": src,
            "status": "ok",
            "started_at": started,
            "ended_at": ended,
            "result": value,
            "metrics": orjson.loads(metrics),
            "events": [
                {"id": e[0], "execution_id": e[1], "seq": e[2], "ts": e[3], "type": e[4], "payload": e[5]}
                for e in events
            ],
        }
        return web.Response(body=orjson.dumps(execution), status=201, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/v1/executions/repl", repl)
    try:
        async with serve(app) as url:
            yield {"url": url, "session_id": session_id, "worker_pid": proc.pid}
    finally:
        writer.close()
        proc.kill()
        await asyncio.wait_for(proc.wait(), 5)
        db.close()


@contextlib.asynccontextmanager
async def pg_floor_server(pg_url: str) -> AsyncIterator[dict[str, Any]]:
    """The bare handler on PostgreSQL: the server's schema, two commits per request."""
    import psycopg
    from aiohttp import web
    from sqlalchemy import create_engine
    from sqlmodel import SQLModel

    import server.store.models  # noqa: F401 - registers the tables

    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOR_WORKER,
        str(theirs.fileno()),
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=mine)
    conn = await psycopg.AsyncConnection.connect(pg_url)
    session_id = str(uuid.uuid4())
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO sessions (id, vm_id, workspace_id, base_commit_oid, worktree_path, status,"
            " created_at, runtime_meta) VALUES (%s, %s, 'bench', 'x', '/tmp', 'ready', %s, '{}')",
            (session_id, str(uuid.uuid4()), now_iso()),
        )
    lock = asyncio.Lock()
    ids = itertools.count(1)
    sql_exec = EXECUTION_INSERT.replace("?", "%s")
    sql_event = EVENT_INSERT.replace("?", "%s")

    async def repl(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        src = body["input"]
        exec_id = str(uuid.uuid4())
        started = now_iso()
        async with lock:
            async with conn.transaction():
                await conn.execute(
                    sql_exec, (exec_id, session_id, "repl", src, "running", started, None, None, "{}")
                )
                await conn.execute(
                    sql_event,
                    (next(ids), exec_id, 1, started, "input_echo", orjson.dumps({"text": src}).decode()),
                )
            writer.write(orjson.dumps({"input": src}) + b"\n")
            out = orjson.loads(await reader.readline())
            ended = now_iso()
            value = orjson.dumps({"type": "number", "preview": out["preview"], "json": out["json"]}).decode()
            async with conn.transaction():
                await conn.execute(sql_event, (next(ids), exec_id, 2, ended, "value", value))
                await conn.execute(
                    "UPDATE executions SET status='ok', ended_at=%s, result=%s, metrics=%s WHERE id=%s",
                    (ended, value, '{"event_count": 2}', exec_id),
                )
        return web.Response(
            body=orjson.dumps({"id": exec_id, "status": "ok", "result": orjson.loads(value)}),
            status=201,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_post("/api/v1/executions/repl", repl)
    try:
        async with serve(app) as url:
            yield {"url": url, "session_id": session_id, "worker_pid": proc.pid}
    finally:
        writer.close()
        proc.kill()
        await asyncio.wait_for(proc.wait(), 5)
        await conn.close()


async def measure(
    client: ClientProcess, url: str, session_id: str, n: int, worker_pid: int
) -> dict[str, Any]:
    """One round of n sequential requests, with the server's and the worker's CPU per request."""
    cpu0, wcpu0 = self_cpu_s(), proc_cpu_s(worker_pid)
    out = await client.run(repl_loop, url, session_id, n, 0)
    cpu1, wcpu1 = self_cpu_s(), proc_cpu_s(worker_pid)
    return {
        "samples": out["result"],
        "server_cpu_ms_per_req": (cpu1 - cpu0) * 1000 / n,
        "worker_cpu_ms_per_req": (wcpu1 - wcpu0) * 1000 / n,
        "client_cpu_ms_per_req": out["client_cpu_s"] * 1000 / n,
    }


def pool(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [s for r in rounds for s in r["samples"]]
    info = summary(samples, scale=1000)
    for key in ("server_cpu_ms_per_req", "worker_cpu_ms_per_req", "client_cpu_ms_per_req"):
        info[key] = round(sum(r[key] for r in rounds) / len(rounds), 4)
    info["round_p50_ms"] = [summary(r["samples"], scale=1000)["p50"] for r in rounds]
    return info


async def run(args: Any) -> tuple[list[Result], dict[str, Any]]:
    raw: dict[str, Any] = {}
    rows: list[Result] = []
    async with ClientProcess(inproc=args.inproc_client) as client, vm_server() as vm:
        async with floor_server(vm.tmp) as floor:
            _, sid = await setup_session(vm.url, vm.worktree)
            vm_pid = await worker_pid(vm.url, sid)
            # Warm-up: connections, caches, the worker's first evaluations.
            await client.run(repl_loop, floor["url"], floor["session_id"], args.warmup, 0)
            await client.run(repl_loop, vm.url, sid, args.warmup, 0)
            floor_rounds: list[dict[str, Any]] = []
            vm_rounds: list[dict[str, Any]] = []
            for r in range(args.rounds):
                order = [
                    ("floor", floor["url"], floor["session_id"], floor["worker_pid"]),
                    ("vm", vm.url, sid, vm_pid),
                ]
                if r % 2:
                    order.reverse()
                for name, url, s, pid in order:
                    m = await measure(client, url, s, args.n, pid)
                    (floor_rounds if name == "floor" else vm_rounds).append(m)
            f = pool(floor_rounds)
            v = pool(vm_rounds)
            raw["floor_sqlite"] = f
            raw["vm_sqlite"] = v
            rows.append(
                Result(
                    "REPL round trip p50 (SQLite)",
                    v["p50"],
                    "ms",
                    f["p50"],
                    v["p50"] / f["p50"],
                    "ratio <= 2",
                    v["p50"] / f["p50"] <= 2,
                )
            )
            rows.append(Result("REPL round trip p99 (SQLite)", v["p99"], "ms", f["p99"], v["p99"] / f["p99"]))
            cpu_v, cpu_f = v["server_cpu_ms_per_req"], f["server_cpu_ms_per_req"]
            rows.append(
                Result("REPL server-process CPU per request (SQLite)", cpu_v, "ms", cpu_f, cpu_v / cpu_f)
            )

            reason = pg_reachable(PG_URL)
            if reason is not None:
                raw["pg"] = {"skipped": reason}
                rows.append(Result("REPL round trip p50 (PostgreSQL)", None, "ms", note=f"skipped: {reason}"))
            else:
                with pg_schema(PG_URL) as pg_url, pg_schema(PG_URL) as pg_floor_url:
                    async with vm_server(db_url=pg_url) as pg, pg_floor_server(pg_floor_url) as pgf:
                        _, psid = await setup_session(pg.url, pg.worktree)
                        ppid = await worker_pid(pg.url, psid)
                        await client.run(repl_loop, pg.url, psid, args.warmup, 0)
                        await client.run(repl_loop, pgf["url"], pgf["session_id"], args.warmup, 0)
                        pg_rounds: list[dict[str, Any]] = []
                        pgf_rounds: list[dict[str, Any]] = []
                        for r in range(args.rounds):
                            pair = [
                                ("vm", pg.url, psid, ppid),
                                ("floor", pgf["url"], pgf["session_id"], pgf["worker_pid"]),
                            ]
                            for name, url, s, pid in pair if r % 2 else reversed(pair):
                                m = await measure(client, url, s, args.n, pid)
                                (pg_rounds if name == "vm" else pgf_rounds).append(m)
                p, pf = pool(pg_rounds), pool(pgf_rounds)
                raw["vm_postgresql"], raw["floor_postgresql"] = p, pf
                ratio = p["p50"] / pf["p50"]
                rows.append(
                    Result(
                        "REPL round trip p50 (PostgreSQL) vs PostgreSQL floor",
                        p["p50"],
                        "ms",
                        pf["p50"],
                        ratio,
                        "ratio <= 2",
                        ratio <= 2,
                    )
                )
                rows.append(
                    Result(
                        "REPL round trip p99 (PostgreSQL)", p["p99"], "ms", pf["p99"], p["p99"] / pf["p99"]
                    )
                )
                rows.append(
                    Result(
                        "REPL round trip p50 (PostgreSQL) vs SQLite floor",
                        p["p50"],
                        "ms",
                        f["p50"],
                        p["p50"] / f["p50"],
                    )
                )
    raw["note"] = (
        "latencies in ms; *_cpu_ms_per_req: CPU of the server process (vm-system or floor app), "
        "of the JS worker and of the client process per request"
    )
    return rows, raw


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--n", type=int, default=500, help="requests per round")
    p.add_argument("--rounds", type=int, default=4, help="alternating floor/system rounds")
    p.add_argument("--warmup", type=int, default=200)
    run_main(PROGRAM, p, run)


if __name__ == "__main__":
    main()
