"""The store tests run against real databases, a SQLite file and PostgreSQL, with the same
assertions: the fixtures and the row builders."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from server.config import Settings
from server.store.store import Store
from tests.conftest import open_store


def ts(n: int) -> str:
    """A fixed-width RFC 3339 timestamp with microseconds; ``n`` orders them."""
    return f"2026-01-02T03:04:{n // 1_000_000:02d}.{n % 1_000_000:06d}Z"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        raw = str(tmp_path / "store.db")
    else:
        raw = request.getfixturevalue("pg_schema_url")
    return Settings.from_env({}, db_url=raw).db_url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    async with open_store(db_url) as st:
        yield st


# ---------------------------------------------------------------------------- row builders


def template_row(name: str | None = None, *, at: int = 1) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": name or f"tpl-{uuid.uuid4()}",
        "engine": "quickjs",
        "is_active": True,
        "exposed_modules": ["fs"],
        "libraries": ["lodash-4.17.21"],
        "created_at": ts(at),
        "updated_at": ts(at),
    }


SETTINGS = {
    "limits": {"cpu_ms": 2000, "wall_ms": 5000, "mem_mb": 128, "max_events": 50000, "max_output_kb": 256},
    "resolver": {"roots": ["."], "extensions": [".js", ".mjs"], "allow_absolute_repo_imports": False},
    "runtime": {"esm": False, "strict": False, "console": True},
}


def capability_row(vm_id: str, **over: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "vm_id": vm_id,
        "kind": "module",
        "name": "fs",
        "enabled": True,
        "config": {},
        "created_at": ts(1),
        **over,
    }


def startup_file_row(vm_id: str, **over: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "vm_id": vm_id,
        "path": "init.js",
        "order_index": 0,
        "mode": "eval",
        "created_at": ts(1),
        **over,
    }


def session_row(vm_id: str, *, status: str = "ready", at: int = 1) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "vm_id": vm_id,
        "workspace_id": "ws",
        "base_commit_oid": "abc123",
        "worktree_path": "/tmp/wt",
        "status": status,
        "created_at": ts(at),
        "closed_at": None,
        "last_error": None,
        "runtime_meta": {"template_name": "t", "worker_pid": 123, "resets": 0},
        "node_id": "node-a",
    }


def execution_row(session_id: str, *, kind: str = "repl", at: int = 1) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "session_id": session_id,
        "kind": kind,
        "input": "1+1" if kind == "repl" else None,
        "path": "main.js" if kind != "repl" else None,
        "args": {"a": [1, 2]},
        "env": {"K": "v"},
        "status": "running",
        "started_at": ts(at),
        "metrics": {},
    }


def events(
    execution_id: str, session_id: str, first_id: int, seqs: range, *, at: int = 10
) -> list[tuple[int, str, int, str, str, str]]:
    """Event rows of an execution (``session_id`` only documents the caller's intent)."""
    return [
        (
            first_id + i,
            execution_id,
            seq,
            ts(at + seq),
            "console",
            orjson.dumps({"level": "log", "text": f"line {seq}"}).decode(),
        )
        for i, seq in enumerate(seqs)
    ]


async def make_session(store: Store, *, status: str = "ready", at: int = 1) -> dict[str, Any]:
    tpl = template_row()
    await store.create_template(template=tpl, settings=SETTINGS)
    row = session_row(tpl["id"], status=status, at=at)
    await store.create_session(row=row)
    return row


async def make_execution(store: Store, session_id: str, *, at: int = 1, kind: str = "repl") -> dict[str, Any]:
    row = execution_row(session_id, at=at, kind=kind)
    await store.create_execution(row=row)
    return row


async def count(store: Store, table: str, where: str = "", **params: Any) -> int:
    sql = f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else "")
    return await store.read(lambda c: int(c.execute(text(sql), params).scalar() or 0), operation="count")
