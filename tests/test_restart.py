"""Restarts: state a previous process left behind is reconciled, and no worker outlives its server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from tests.conftest import (
    INTERRUPTED_SESSION,
    assert_gap_free,
    free_port,
    open_store,
    session_body,
    stored_events,
)

ROOT = Path(__file__).resolve().parent.parent

# Logs a line every few milliseconds until the server goes away.
FOREVER = "let i = 0; setInterval(() => console.log('line ' + (++i)), 3); 'started'"


# ---------------------------------------------------------------------------- in process


async def test_rows_left_live_are_reconciled_on_start(aiohttp_client: Any, settings: Settings) -> None:
    # What a crashed process leaves behind: a ready session and a running execution with events.
    sid, eid = str(uuid.uuid4()), str(uuid.uuid4())
    async with open_store(settings.db_url) as st:
        await st.create_session(
            row={
                "id": sid,
                "vm_id": str(uuid.uuid4()),
                "workspace_id": "ws",
                "base_commit_oid": "abc",
                "worktree_path": "/tmp",
                "status": "ready",
                "created_at": "2026-01-01T00:00:00.000000Z",
                "closed_at": None,
                "last_error": None,
                "runtime_meta": {"worker_pid": None},
            }
        )
        await st.create_execution(
            row={
                "id": eid,
                "session_id": sid,
                "kind": "repl",
                "input": "x",
                "path": None,
                "args": {},
                "env": {},
                "status": "running",
                "started_at": "2026-01-01T00:00:01.000000Z",
                "metrics": {},
            }
        )
        await st.write_batch(
            events=[
                (
                    i,
                    eid,
                    i,
                    f"2026-01-01T00:00:0{i}.000000Z",
                    "console",
                    json.dumps({"level": "log", "text": str(i)}),
                )
                for i in (1, 2, 3)
            ]
        )

    client: TestClient = await aiohttp_client(create_app(settings))
    session = await (await client.get(f"/api/v1/sessions/{sid}")).json()
    assert session["status"] == "closed"
    assert session["last_error"] == INTERRUPTED_SESSION
    assert session["closed_at"]
    execution = await (await client.get(f"/api/v1/executions/{eid}")).json()
    assert execution["status"] == "error"
    assert execution["error"]["code"] == "INTERRUPTED"
    assert execution["ended_at"]
    assert execution["metrics"]["event_count"] == 3
    events = await stored_events(client, eid)
    assert [(e["id"], e["seq"], e["payload"]["text"]) for e in events] == [
        (1, 1, "1"),
        (2, 2, "2"),
        (3, 3, "3"),
    ]
    r = await client.post("/api/v1/executions/repl", json={"session_id": sid, "input": "1"})
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "SESSION_NOT_READY"

    # New events continue the server-wide id sequence after the stored ones.
    r = await client.post("/api/v1/templates", json={"name": "after-restart"})
    tpl = await r.json()
    wt = Path(settings.cache_dir).parent / "wt"
    wt.mkdir()
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], wt))
    s2 = await r.json()
    r = await client.post("/api/v1/executions/repl", json={"session_id": s2["id"], "input": "1+1"})
    body = await r.json()
    assert body["status"] == "ok"
    assert min(e["id"] for e in body["events"]) > 3


async def test_graceful_stop_then_start_ends_the_running_execution(
    aiohttp_client: Any, settings: Settings, worktree: Path
) -> None:
    first: TestClient = await aiohttp_client(create_app(settings))
    tpl = await (await first.post("/api/v1/templates", json={"name": "spin"})).json()
    r = await first.patch(
        f"/api/v1/templates/{tpl['id']}", json={"settings": {"limits": {"cpu_ms": 600000, "wall_ms": 600000}}}
    )
    assert r.status == 200
    s = await (await first.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))).json()
    r = await first.post(
        "/api/v1/executions/repl", json={"session_id": s["id"], "input": "while(true){}", "wait": False}
    )
    assert r.status == 202
    running = await r.json()
    assert running["status"] == "running"
    await first.close()

    # The graceful stop ended the execution and closed the session itself.
    async with open_store(settings.db_url) as st:
        stopped = await st.get_execution(execution_id=running["id"])
        assert stopped["status"] == "error"
        assert stopped["error"]["code"] == "INTERRUPTED"
        assert (await st.get_session(session_id=s["id"]))["status"] == "closed"

    second: TestClient = await aiohttp_client(create_app(settings))
    execution = await (await second.get(f"/api/v1/executions/{running['id']}")).json()
    assert execution["status"] == "error"
    assert execution["error"]["code"] == "INTERRUPTED"
    events = await stored_events(second, running["id"])
    assert events[0]["type"] == "input_echo"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    session = await (await second.get(f"/api/v1/sessions/{s['id']}")).json()
    assert session["status"] == "closed"
    assert session["last_error"]


# ---------------------------------------------------------------------------- a real server process


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_gone(pids: set[int], *, attempts: int = 200) -> set[int]:
    """Poll until none of ``pids`` exists; returns the ones still there when giving up."""
    left = set(pids)
    for _ in range(attempts):
        left = {p for p in left if alive(p)}
        if not left:
            break
        time.sleep(0.05)
    return left


class Server:
    """``run_server`` in a subprocess on a given database, driven over real HTTP."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "db.sqlite"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        code = (
            "from server.app import run_server; from server.config import Settings; "
            f"run_server(Settings.from_env({{}}, listen='127.0.0.1:{port}', db_url={str(self.db)!r}, "
            f"cache_dir={str(self.tmp / 'c')!r}))"
        )
        with open(self.tmp / f"server-{port}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        for _ in range(600):
            assert self.proc.poll() is None, self.log()
            try:
                if self.call("GET", "/api/v1/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become healthy:\n" + self.log())

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("server-*.log")))

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.call(method, path, body)
        assert status in (200, 201, 202), (status, data)
        return data

    def start_forever(self, worktree: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """A session running a never-ending logging execution; returns (session, execution, events)."""
        tpl = self.ok("POST", "/api/v1/templates", {"name": "forever"})
        self.ok(
            "PATCH",
            f"/api/v1/templates/{tpl['id']}",
            {
                "settings": {
                    "limits": {"cpu_ms": 600000, "wall_ms": 600000, "max_events": 0, "max_output_kb": 0}
                }
            },
        )
        session = self.ok("POST", "/api/v1/sessions", session_body(tpl["id"], worktree))
        execution = self.ok(
            "POST", "/api/v1/executions/repl", {"session_id": session["id"], "input": FOREVER, "wait": False}
        )
        for _ in range(600):
            events = self.ok("GET", f"/api/v1/executions/{execution['id']}/events")
            if len(events) >= 10:
                break
            time.sleep(0.02)
        assert len(events) >= 10, events
        assert self.ok("GET", f"/api/v1/executions/{execution['id']}")["status"] == "running"
        session = self.ok("GET", f"/api/v1/sessions/{session['id']}")
        return session, execution, events

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[], Server]]:
    """Starts a server on the test's database each call; every one is stopped afterwards."""
    started: list[Server] = []

    def start() -> Server:
        server = Server(tmp_path)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def assert_prefix_intact(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    assert after[: len(before)] == before
    assert_gap_free(after)


def test_sigkill_mid_execution_then_restart(start_server: Callable[[], Server], worktree: Path) -> None:
    first = start_server()
    session, execution, before = first.start_forever(worktree)
    worker_pid = session["runtime_meta"]["worker_pid"]
    assert isinstance(worker_pid, int) and alive(worker_pid)
    assert first.proc is not None
    children = descendants(first.proc.pid)
    assert worker_pid in children

    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    assert wait_until_gone({worker_pid} | children) == set(), "processes outlived the killed server"

    second = start_server()
    ended = second.ok("GET", f"/api/v1/executions/{execution['id']}")
    assert ended["status"] == "error"
    assert ended["error"]["code"] == "INTERRUPTED"
    assert ended["ended_at"]
    assert {"wall_ms", "cpu_ms", "event_count", "output_bytes"} <= set(ended["metrics"])
    after = second.ok("GET", f"/api/v1/executions/{execution['id']}/events?limit=10000")
    assert_prefix_intact(before, after)
    assert after[0]["type"] == "input_echo"
    assert {e["type"] for e in after[1:]} == {"console"}
    assert ended["metrics"]["event_count"] == len(after)
    closed = second.ok("GET", f"/api/v1/sessions/{session['id']}")
    assert closed["status"] == "closed"
    assert closed["last_error"] == INTERRUPTED_SESSION
    assert second.ok("GET", "/api/v1/runtime/summary")["active_sessions"] == 0


def test_sigterm_mid_execution_exits_cleanly(start_server: Callable[[], Server], worktree: Path) -> None:
    server = start_server()
    session, execution, before = server.start_forever(worktree)
    worker_pid = session["runtime_meta"]["worker_pid"]
    assert server.proc is not None
    children = descendants(server.proc.pid)

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log()
    assert wait_until_gone({worker_pid} | children) == set(), "processes outlived the stopped server"

    # Read the database as the server left it, before any restart could reconcile it.
    async def read() -> tuple[Any, Any, Any]:
        async with open_store(Settings.from_env({}, db_url=str(server.db)).db_url) as st:
            return (
                await st.get_execution(execution_id=execution["id"]),
                await st.get_session(session_id=session["id"]),
                await st.list_events(execution_id=execution["id"], after_seq=0, limit=100000),
            )

    ended, closed, rows = asyncio.run(read())
    assert ended["status"] == "error"
    assert ended["error"]["code"] == "INTERRUPTED"
    assert ended["ended_at"]
    assert closed["status"] == "closed"
    assert closed["closed_at"]
    seqs = [r[2] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [r[0] for r in rows[: len(before)]] == [e["id"] for e in before]
