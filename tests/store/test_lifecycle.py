"""The store's life against real databases: start-up reconciliation, reopening, schema versions,
lost connections, the server on PostgreSQL, the cluster schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import text

from server.app import create_app
from server.config import Settings
from server.errors import StoreError
from server.store.models import SCHEMA_VERSION
from server.store.store import Store
from tests.conftest import INTERRUPTED_SESSION, Api, open_store, stored_events
from tests.store.conftest import (
    count,
    events,
    make_execution,
    make_session,
    ts,
)

# ---------------------------------------------------------------------------- startup


async def test_reconcile_on_startup_closes_live_sessions_and_interrupts_running(store: Store) -> None:
    ready = await make_session(store, status="ready")
    starting = await make_session(store, status="starting")
    crashed = await make_session(store, status="crashed")
    running = await make_execution(store, ready["id"], at=1)
    await store.write_batch(events=events(running["id"], ready["id"], 1, range(1, 4), at=10))
    silent = await make_execution(store, starting["id"])
    done = await make_execution(store, ready["id"])
    await store.write_batch(
        events=[],
        finalize=[
            {
                "id": done["id"],
                "status": "ok",
                "ended_at": ts(5),
                "result": {"type": "number"},
                "metrics": {"event_count": 0},
            }
        ],
    )

    assert await store.reconcile_on_startup(now=ts(77)) == (2, 2)

    for row in (ready, starting):
        got = await store.get_session(session_id=row["id"])
        assert got["status"] == "closed"
        assert got["closed_at"] == ts(77)
        assert got["last_error"] == INTERRUPTED_SESSION
    assert (await store.get_session(session_id=crashed["id"]))["status"] == "crashed"

    got = await store.get_execution(execution_id=running["id"])
    assert got["status"] == "error"
    assert got["ended_at"] == ts(77)
    assert got["error"]["code"] == "INTERRUPTED"
    assert got["error"]["message"]
    # Metrics rebuilt from what was stored: wall time up to the last event (ts 13 - ts 1 = 12 us).
    assert got["metrics"] == {"wall_ms": 0.012, "cpu_ms": None, "event_count": 3, "output_bytes": None}
    assert [e[2] for e in await store.list_events(execution_id=running["id"], after_seq=0, limit=9)] == [
        1,
        2,
        3,
    ]
    got = await store.get_execution(execution_id=silent["id"])
    assert got["status"] == "error" and got["error"]["code"] == "INTERRUPTED"
    assert got["metrics"] == {"wall_ms": 0.0, "cpu_ms": None, "event_count": 0, "output_bytes": None}
    assert (await store.get_execution(execution_id=done["id"]))["status"] == "ok"

    # Nothing left to reconcile the second time.
    assert await store.reconcile_on_startup(now=ts(78)) == (0, 0)


async def test_opening_twice_on_the_same_database_keeps_the_data(db_url: str) -> None:
    async with open_store(db_url) as first:
        sess = await make_session(first)
        ex = await make_execution(first, sess["id"])
        await first.write_batch(events=events(ex["id"], sess["id"], 1, range(1, 3)))

    async with open_store(db_url) as second:
        assert await second.get_session(session_id=sess["id"]) == sess
        assert await second.max_event_id() == 2
        assert await count(second, "vm_meta") == 1
        # And the reopened store writes normally.
        await second.write_batch(events=events(ex["id"], sess["id"], 3, range(3, 4)))
        assert await second.max_event_id() == 3


async def test_newer_schema_version_is_refused(db_url: str) -> None:
    async with open_store(db_url) as first:
        await first.write(
            lambda c: c.execute(
                text("UPDATE vm_meta SET value=:v WHERE key='schema_version'"), {"v": str(SCHEMA_VERSION + 1)}
            ),
            operation="bump schema version",
        )

    second = Store(db_url)
    with pytest.raises(RuntimeError, match="upgrade vm-system"):
        await second.open()
    await second.close()


async def test_store_recovers_after_postgresql_drops_its_connection(pg_schema_url: str) -> None:
    import psycopg

    async with open_store(Settings.from_env({}, db_url=pg_schema_url).db_url) as st:
        sess = await make_session(st)
        backend = await st.write(
            lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar(), operation="pid"
        )
        with psycopg.connect(pg_schema_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        # The operation that meets the dead connection fails with the operation named...
        with pytest.raises(StoreError, match="could not create execution"):
            await make_execution(st, sess["id"])
        # ...and the next one reconnects.
        ex = await make_execution(st, sess["id"])
        assert (await st.get_execution(execution_id=ex["id"]))["status"] == "running"


# ---------------------------------------------------------------------------- the server on PostgreSQL


async def test_http_flow_on_postgresql(aiohttp_client: Any, pg_schema_url: str, tmp_path: Path) -> None:
    settings = Settings.from_env({}, db_url=pg_schema_url, cache_dir=str(tmp_path / "cache"))
    assert settings.db_url.startswith("postgresql+psycopg://")
    client: TestClient = await aiohttp_client(create_app(settings))
    worktree = tmp_path / "wt"
    worktree.mkdir()

    api = Api(client, worktree)
    sess = await api.session((await api.template("pg"))["id"])
    assert sess["status"] == "ready"

    status, body = await api.repl(sess["id"], "1+1")
    assert status == 201, body
    assert body["status"] == "ok"
    assert body["result"]["json"] == 2
    assert [e["type"] for e in body["events"]] == ["input_echo", "value"]

    assert await stored_events(client, body["id"]) == body["events"]
    r = await client.get(f"/api/v1/executions/{body['id']}")
    stored = await r.json()
    assert stored["status"] == "ok"
    assert stored["started_at"] == body["started_at"] and stored["ended_at"] == body["ended_at"]
    r = await client.get("/api/v1/health")
    assert r.status == 200


# ---------------------------------------------------------------------------- cluster schema


async def test_a_version_1_database_is_migrated_in_place(db_url: str) -> None:
    async with open_store(db_url) as first:
        sess = await make_session(first)
        ex = await make_execution(first, sess["id"])
        await first.write_batch(events=events(ex["id"], sess["id"], 1, range(1, 4)))

        # Back to what a version-1 server wrote: no nodes, no node_id, no id sequence.
        def downgrade(conn: Any) -> None:
            conn.execute(text("DROP INDEX ix_sessions_node_status"))
            conn.execute(text("ALTER TABLE sessions DROP COLUMN node_id"))
            conn.execute(text("DROP TABLE nodes"))
            if not first.is_sqlite:
                conn.execute(text("DROP SEQUENCE vm_event_ids"))
            conn.execute(text("UPDATE vm_meta SET value='1' WHERE key='schema_version'"))

        await first.write(downgrade, operation="downgrade")

    for _ in range(2):  # and a second open finds nothing left to do
        async with open_store(db_url) as st:
            version = await st.read(
                lambda c: c.execute(text("SELECT value FROM vm_meta WHERE key='schema_version'")).scalar(),
                operation="version",
            )
            assert version == str(SCHEMA_VERSION) == "2"
            kept = await st.get_session(session_id=sess["id"])
            assert kept is not None and kept["node_id"] is None  # written before clusters
            assert {k: v for k, v in kept.items() if k != "node_id"} == {
                k: v for k, v in sess.items() if k != "node_id"
            }
            assert await count(st, "nodes") == 0
            if not st.is_sqlite:
                # Event ids continue past the stored ones, in blocks.
                first_id = await st.next_id_block()
                assert first_id >= 4 and st.id_block == 1000
                assert await st.next_id_block() == first_id + 1000


async def test_reconciling_a_node_leaves_other_nodes_rows_alone(store: Store) -> None:
    mine, theirs, old = [await make_session(store) for _ in range(3)]
    for row, node in ((mine, "node-a"), (theirs, "node-b"), (old, None)):
        await store.write(
            lambda c, r=row, n=node: c.execute(
                text("UPDATE sessions SET node_id=:n WHERE id=:id"), {"n": n, "id": r["id"]}
            ),
            operation="place",
        )
    running = {row["id"]: await make_execution(store, row["id"]) for row in (mine, theirs, old)}

    assert await store.reconcile_on_startup(now=ts(50), node_id="node-a") == (2, 2)
    for row in (mine, old):  # its own, and those written before clusters (no node)
        assert (await store.get_session(session_id=row["id"]))["status"] == "closed"
        ended = await store.get_execution(execution_id=running[row["id"]]["id"])
        assert ended["status"] == "error" and ended["error"]["code"] == "INTERRUPTED"
    assert (await store.get_session(session_id=theirs["id"]))["status"] == "ready"
    assert (await store.get_execution(execution_id=running[theirs["id"]]["id"]))["status"] == "running"
