"""Shared fixtures: real servers on real SQLite files (and PostgreSQL), real QuickJS workers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.store.store import Store

# The browser tests' fixtures (Chromium, a server per test, the page): see tests/ui_support.py.
pytest_plugins = ("tests.ui_support",)

PG_URL = os.environ.get("VM_SYSTEM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
MISSING = "00000000-0000-4000-8000-000000000000"  # a well-formed id that names nothing
INTERRUPTED_SESSION = "garbage collected on daemon startup: runtime state does not survive process restarts"


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def require_pg() -> None:
    """Skip the test when PostgreSQL is not reachable (fail in CI, where it must be)."""
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but not reachable at {PG_URL}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_pg()
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    wt = tmp_path / "worktree"
    wt.mkdir()
    return wt


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, db_url=str(tmp_path / "vm.db"), cache_dir=str(tmp_path / "cache"))


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Stop a server started as a subprocess the way a user would (Ctrl+C), killing it if stuck."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return sock


def slow_reader_session() -> aiohttp.ClientSession:
    """A client whose sockets keep a small kernel receive buffer, for slow-reader tests.

    Left to autotune (up to ``net.ipv4.tcp_rmem``'s maximum, 32 MB on some machines) the
    buffer can absorb a whole flood, and the server never sees a slow reader.
    """
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=_small_receive_buffer))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def open_store(db_url: str) -> AsyncIterator[Store]:
    """The store on `db_url`, opened for the block (to read or seed the database directly)."""
    st = Store(db_url)
    await st.open()
    try:
        yield st
    finally:
        await st.close()


# ---------------------------------------------------------------------------- HTTP helpers


async def expect_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    """Assert an error response and return its `error` object (envelope shape checked)."""
    body = await resp.json()
    assert resp.status == status, body
    assert set(body) == {"error"}, body
    assert set(body["error"]) <= {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if "details" in body["error"]:
        assert isinstance(body["error"]["details"], dict) and body["error"]["details"], body
    return body["error"]


async def get_json(client: TestClient, path: str, **params: Any) -> Any:
    r = await client.get(path, params=params or None)
    assert r.status == 200, await r.text()
    return await r.json()


async def history(client: TestClient, session_id: str, **params: Any) -> list[dict[str, Any]]:
    """A session's executions, newest first."""
    return await get_json(client, "/api/v1/executions", session_id=session_id, **params)


async def stored_events(client: TestClient, execution_id: str) -> list[dict[str, Any]]:
    return await get_json(client, f"/api/v1/executions/{execution_id}/events")


def session_body(template_id: str, worktree: Path | str, **over: Any) -> dict[str, Any]:
    """A valid `POST /api/v1/sessions` body; `over` replaces or adds fields."""
    return {
        "template_id": template_id,
        "workspace_id": "ws",
        "base_commit_oid": "abc123",
        "worktree_path": str(worktree),
        **over,
    }


async def eventually(check: Any, *, within: float = 30.0, every: float = 0.02) -> Any:
    """Poll ``await check()`` until it returns something truthy; fail after ``within`` s."""
    import asyncio
    import time

    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s: {check}")
        await asyncio.sleep(every)


def assert_gap_free(events: list[dict[str, Any]]) -> None:
    """Seqs run 1..n with no gap; ids increase and never repeat."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


class Api:
    """Small helpers over a test client: create templates and sessions in one call."""

    def __init__(self, client: TestClient, worktree: Path) -> None:
        self.client = client
        self.worktree = worktree

    async def template(self, name: str | None = None, **settings: Any) -> dict[str, Any]:
        r = await self.client.post("/api/v1/templates", json={"name": name or f"t-{uuid.uuid4()}"})
        assert r.status == 201, await r.text()
        tpl = await r.json()
        if settings:
            r = await self.client.patch(f"/api/v1/templates/{tpl['id']}", json={"settings": settings})
            assert r.status == 200, await r.text()
        return tpl

    async def session(self, template_id: str | None = None, **limits: Any) -> dict[str, Any]:
        if template_id is None:
            template_id = (await self.template(limits=limits) if limits else await self.template())["id"]
        r = await self.client.post("/api/v1/sessions", json=session_body(template_id, self.worktree))
        assert r.status == 201, await r.text()
        return await r.json()

    async def get_session(self, session_id: str) -> dict[str, Any]:
        return await get_json(self.client, f"/api/v1/sessions/{session_id}")

    async def worker_pid(self, session_id: str) -> int:
        return int((await self.get_session(session_id))["runtime_meta"]["worker_pid"])

    async def replaced_worker(self, session_id: str, old_pid: int) -> dict[str, Any]:
        """Wait until the session runs on a worker other than ``old_pid``; its row."""

        async def check() -> dict[str, Any] | None:
            row = await self.get_session(session_id)
            return row if row["runtime_meta"]["worker_pid"] not in (old_pid, None) else None

        return await eventually(check)

    async def repl(self, session_id: str, code: str, **extra: Any) -> tuple[int, dict[str, Any]]:
        r = await self.client.post(
            "/api/v1/executions/repl", json={"session_id": session_id, "input": code, **extra}
        )
        return r.status, await r.json()

    async def value(self, session_id: str, code: str) -> dict[str, Any]:
        status, body = await self.repl(session_id, code)
        assert status == 201, body
        assert body["status"] == "ok", body
        return body["result"]


@pytest.fixture
def api(client: TestClient, worktree: Path) -> Api:
    return Api(client, worktree)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
