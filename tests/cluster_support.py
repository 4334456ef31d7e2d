"""What the cluster tests share: a fresh PostgreSQL database, real `vm-system serve` nodes, sockets.

A ``Node`` is a real server process (``python -m server.cli serve``) with its own port and log
file, driven over real HTTP; a ``Socket`` is a real WebSocket client that keeps every message it
receives, so a test can wait for what a user would see.
"""

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import PG_URL, free_port, require_pg

ROOT = Path(__file__).resolve().parent.parent
NODE_TIMEOUT = 3.0  # --node-timeout of the test nodes: a killed node is lost within seconds
WAIT = 60.0  # the longest any condition may take on a loaded machine


@contextmanager
def fresh_database() -> Iterator[str]:
    """A PostgreSQL database of its own (LISTEN/NOTIFY channels are per database), dropped after."""
    require_pg()
    import psycopg

    name = f"vm_cluster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def wait_for(check: Callable[[], Any], what: str, *, within: float = WAIT, every: float = 0.05) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(every)


class Node:
    """A `vm-system serve` process on the cluster's database."""

    def __init__(self, name: str, db: str, tmp: Path, *, max_sessions: int = 0) -> None:
        self.name = name
        self.db = db
        self.tmp = tmp
        self.max_sessions = max_sessions
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = tmp / f"node-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "server.cli", "serve", "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--db", self.db, "--cache-dir", str(self.tmp / "cache"), "--node-id", self.name]
        cmd += ["--node-timeout", str(NODE_TIMEOUT), "--max-sessions", str(self.max_sessions)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self) -> None:
        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
            try:
                return self.call("GET", "/api/v1/health")[0] == 200
            except OSError:
                return False

        wait_for(healthy, f"node {self.name} answering", within=120)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def call(
        self, method: str, path: str, body: Any = None, *, timeout: float = WAIT
    ) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data, _ = self.call(method, path, body)
        assert status in (200, 201, 202), (self.name, method, path, status, data)
        return data

    def text(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=WAIT) as resp:
            return str(resp.read().decode())

    # -- shortcuts ------------------------------------------------------------------------

    def template(self, **limits: Any) -> dict[str, Any]:
        tpl = self.ok("POST", "/api/v1/templates", {"name": f"t-{uuid.uuid4().hex[:10]}"})
        if limits:
            self.ok("PATCH", f"/api/v1/templates/{tpl['id']}", {"settings": {"limits": limits}})
        return tpl  # type: ignore[no-any-return]

    def session(self, template_id: str, worktree: Path) -> dict[str, Any]:
        body = {
            "template_id": template_id,
            "workspace_id": "ws",
            "base_commit_oid": "abc123",
            "worktree_path": str(worktree),
        }
        return self.ok("POST", "/api/v1/sessions", body)  # type: ignore[no-any-return]

    def launch(self, session_id: str, code: str) -> dict[str, Any]:
        """A REPL execution started without waiting (202): its running record."""
        body = {"session_id": session_id, "input": code, "wait": False}
        return self.ok("POST", "/api/v1/executions/repl", body)  # type: ignore[no-any-return]

    def repl(self, session_id: str, code: str, **extra: Any) -> tuple[int, Any]:
        status, data, _ = self.call(
            "POST", "/api/v1/executions/repl", {"session_id": session_id, "input": code, **extra}
        )
        return status, data

    def value(self, session_id: str, code: str) -> Any:
        status, data = self.repl(session_id, code)
        assert status == 201 and data["status"] == "ok", (self.name, status, data)
        return data["result"]["json"]

    def events(self, execution_id: str) -> list[dict[str, Any]]:
        return self.ok("GET", f"/api/v1/executions/{execution_id}/events?limit=10000")  # type: ignore[no-any-return]

    def get_session(self, session_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/api/v1/sessions/{session_id}")  # type: ignore[no-any-return]

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["id"]: n for n in self.ok("GET", "/api/v1/nodes")}


class Socket:
    """A WebSocket client on one node that records every message it receives."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._next = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, node: Node) -> Socket:
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(node.url + "/api/v1/ws", max_msg_size=0)
        return cls(http, ws)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))

    async def send(self, **msg: Any) -> int:
        self._next += 1
        await self.ws.send_json({"id": self._next, **msg})
        return self._next

    async def wait(
        self, check: Callable[[list[dict[str, Any]]], Any], what: str, within: float = WAIT
    ) -> Any:
        deadline = time.monotonic() + within
        while True:
            found = check(self.messages)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {within} s; got {self.messages[-5:]}")
            await asyncio.sleep(0.02)

    async def reply(self, msg_id: int, within: float = WAIT) -> dict[str, Any]:
        def first(msgs: list[dict[str, Any]]) -> dict[str, Any] | None:
            return next((m for m in msgs if m.get("reply_to") == msg_id and m["type"] != "queued"), None)

        return await self.wait(first, f"the reply to message {msg_id}", within)  # type: ignore[no-any-return]

    async def request(self, **msg: Any) -> dict[str, Any]:
        """Send a message and wait for its reply (a ``queued`` notice is not the reply)."""
        return await self.reply(await self.send(**msg))

    async def subscribe(self, **target: Any) -> str:
        answer = await self.request(type="subscribe", **target)
        assert answer["type"] == "subscribed", answer
        return str(answer["subscription"])

    async def completed(self, subscription: str, within: float = WAIT) -> None:
        await self.wait(lambda m: self.of(subscription, "complete"), f"{subscription} complete", within)

    async def told(self, subscription: str, kind: str, status: str, within: float = WAIT) -> None:
        """Wait for an ``execution`` or ``session`` message with that status."""
        await self.wait(
            lambda m: [x for x in self.of(subscription, kind) if x[kind]["status"] == status],
            f"{subscription}: {kind} {status}",
            within,
        )

    def events(self, subscription: str) -> list[dict[str, Any]]:
        frames = [m for m in self.messages if m["type"] == "events" and m["subscription"] == subscription]
        return [e for m in frames for e in m["events"]]

    def of(self, subscription: str, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("subscription") == subscription and m["type"] == kind]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await self.http.close()
