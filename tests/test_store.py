"""The store against real databases: a SQLite file and PostgreSQL, with the same assertions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import text

from server.app import create_app
from server.config import Settings
from server.errors import StoreConflict, StoreError
from server.store.models import SCHEMA_VERSION
from server.store.store import Store
from tests.conftest import INTERRUPTED_SESSION, Api, open_store, stored_events


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


# ---------------------------------------------------------------------------- templates


async def test_template_round_trip_keeps_every_field(store: Store) -> None:
    tpl = template_row("alpha")
    await store.create_template(template=tpl, settings=SETTINGS)

    got = await store.get_template(template_id=tpl["id"])
    assert got is not None
    assert {**got, "is_active": bool(got["is_active"])} == tpl

    bundle = await store.get_template_bundle(template_id=tpl["id"])
    assert bundle is not None
    assert bundle["settings"] == {"vm_id": tpl["id"], **SETTINGS}
    assert bundle["capabilities"] == [] and bundle["startup_files"] == []

    assert await store.get_template(template_id=str(uuid.uuid4())) is None
    assert await store.get_template_bundle(template_id=str(uuid.uuid4())) is None


async def test_templates_list_newest_first(store: Store) -> None:
    old, new = template_row(at=1), template_row(at=2)
    await store.create_template(template=old, settings=SETTINGS)
    await store.create_template(template=new, settings=SETTINGS)
    assert [t["id"] for t in await store.list_templates()] == [new["id"], old["id"]]


async def test_update_template_writes_template_and_settings_together(store: Store) -> None:
    tpl = template_row()
    await store.create_template(template=tpl, settings=SETTINGS)

    def mutate(t: dict[str, Any], s: dict[str, Any]) -> None:
        t["name"] = "renamed"
        t["exposed_modules"] = ["fs", "exec"]
        s["limits"] = {**s["limits"], "cpu_ms": 10}

    assert await store.update_template(template_id=tpl["id"], mutate=mutate, updated_at=ts(99))
    bundle = await store.get_template_bundle(template_id=tpl["id"])
    assert bundle is not None
    assert bundle["template"]["name"] == "renamed"
    assert bundle["template"]["exposed_modules"] == ["fs", "exec"]
    assert bundle["template"]["updated_at"] == ts(99)
    assert bundle["template"]["created_at"] == tpl["created_at"]
    assert bundle["settings"]["limits"]["cpu_ms"] == 10

    assert not await store.update_template(template_id=str(uuid.uuid4()), mutate=mutate, updated_at=ts(1))


async def test_capabilities_and_startup_files_crud(store: Store) -> None:
    tpl = template_row()
    await store.create_template(template=tpl, settings=SETTINGS)
    cap = capability_row(tpl["id"], config={"root": "."})
    await store.add_capability(row=cap)
    files = [startup_file_row(tpl["id"], path=p, order_index=i) for p, i in (("b.js", 20), ("a.js", 10))]
    for f in files:
        await store.add_startup_file(row=f)

    caps = await store.list_capabilities(template_id=tpl["id"])
    assert [(c["id"], c["kind"], c["name"], bool(c["enabled"]), c["config"]) for c in caps] == [
        (cap["id"], "module", "fs", True, {"root": "."})
    ]
    listed = await store.list_startup_files(template_id=tpl["id"])
    assert [f["path"] for f in listed] == ["a.js", "b.js"]  # by order_index

    assert await store.delete_capability(template_id=tpl["id"], capability_id=cap["id"])
    assert not await store.delete_capability(template_id=tpl["id"], capability_id=cap["id"])
    assert await store.delete_startup_file(template_id=tpl["id"], startup_file_id=files[0]["id"])
    assert [f["path"] for f in await store.list_startup_files(template_id=tpl["id"])] == ["a.js"]
    assert await store.list_capabilities(template_id=tpl["id"]) == []


async def test_delete_template_cascades_to_children_but_keeps_sessions_and_executions(
    store: Store,
) -> None:
    tpl = template_row()
    await store.create_template(template=tpl, settings=SETTINGS)
    await store.add_capability(row=capability_row(tpl["id"]))
    await store.add_startup_file(row=startup_file_row(tpl["id"]))
    sess = session_row(tpl["id"])
    await store.create_session(row=sess)
    ex = await make_execution(store, sess["id"])
    await store.write_batch(events=events(ex["id"], sess["id"], 1, range(1, 3)))

    assert await store.delete_template(template_id=tpl["id"])
    assert not await store.delete_template(template_id=tpl["id"])

    assert await store.get_template_bundle(template_id=tpl["id"]) is None
    assert await store.list_capabilities(template_id=tpl["id"]) == []
    assert await store.list_startup_files(template_id=tpl["id"]) == []
    for table in ("template_settings", "capabilities", "startup_files"):
        assert await count(store, table, "vm_id=:id", id=tpl["id"]) == 0, table
    assert (await store.get_session(session_id=sess["id"]))["vm_id"] == tpl["id"]
    assert (await store.get_execution(execution_id=ex["id"]))["session_id"] == sess["id"]
    assert len(await store.list_events(execution_id=ex["id"], after_seq=0, limit=10)) == 2


async def test_unique_constraints_raise_conflict_and_leave_the_store_usable(store: Store) -> None:
    tpl = template_row("same-name")
    await store.create_template(template=tpl, settings=SETTINGS)
    dup = template_row("same-name")
    with pytest.raises(StoreConflict):
        await store.create_template(template=dup, settings=SETTINGS)
    # The failed create wrote nothing, not even its settings row.
    assert await store.get_template(template_id=dup["id"]) is None
    assert await count(store, "template_settings", "vm_id=:id", id=dup["id"]) == 0

    await store.add_capability(row=capability_row(tpl["id"]))
    with pytest.raises(StoreConflict):
        await store.add_capability(row=capability_row(tpl["id"]))
    # Same name under another kind is a different capability.
    await store.add_capability(row=capability_row(tpl["id"], kind="global"))

    await store.add_startup_file(row=startup_file_row(tpl["id"]))
    with pytest.raises(StoreConflict):
        await store.add_startup_file(row=startup_file_row(tpl["id"], order_index=5))

    # The writer connection recovered from every failure.
    other = template_row("other")
    await store.create_template(template=other, settings=SETTINGS)
    assert len(await store.list_capabilities(template_id=tpl["id"])) == 2
    assert len(await store.list_startup_files(template_id=tpl["id"])) == 1
    assert {t["name"] for t in await store.list_templates()} == {"same-name", "other"}


# ---------------------------------------------------------------------------- sessions


async def test_sessions_create_update_list(store: Store) -> None:
    tpl = template_row()
    await store.create_template(template=tpl, settings=SETTINGS)
    a = session_row(tpl["id"], at=1)
    b = session_row(tpl["id"], at=2, status="starting")
    other = session_row(str(uuid.uuid4()), at=3)  # a template that no longer exists is fine
    for row in (a, b, other):
        await store.create_session(row=row)

    assert await store.get_session(session_id=a["id"]) == a
    assert await store.get_session(session_id=str(uuid.uuid4())) is None
    assert [s["id"] for s in await store.list_sessions()] == [other["id"], b["id"], a["id"]]
    assert [s["id"] for s in await store.list_sessions(template_id=tpl["id"])] == [b["id"], a["id"]]
    assert [s["id"] for s in await store.list_sessions(status="starting")] == [b["id"]]

    meta = {**a["runtime_meta"], "resets": 1}
    await store.update_session(
        session_id=a["id"], status="closed", closed_at=ts(50), last_error="bye", runtime_meta=meta
    )
    got = await store.get_session(session_id=a["id"])
    assert got == {**a, "status": "closed", "closed_at": ts(50), "last_error": "bye", "runtime_meta": meta}
    assert [s["id"] for s in await store.list_sessions(status="closed")] == [a["id"]]


# ---------------------------------------------------------------------------- executions, events


async def test_execution_round_trip_and_finalize(store: Store) -> None:
    sess = await make_session(store)
    ex = await make_execution(store, sess["id"], kind="run_file")

    got = await store.get_execution(execution_id=ex["id"])
    assert got == {**ex, "ended_at": None, "result": None, "error": None}
    assert await store.count_running() == 1

    evs = events(ex["id"], sess["id"], 1, range(1, 4))
    fin = {
        "id": ex["id"],
        "status": "ok",
        "ended_at": ts(90),
        "result": {"type": "number", "preview": "2", "json": 2},
        "metrics": {"wall_ms": 1.5, "cpu_ms": 1.0, "event_count": 3, "output_bytes": 10},
    }
    await store.write_batch(events=evs, finalize=[fin])

    got = await store.get_execution(execution_id=ex["id"])
    assert got == {**ex, **fin, "error": None}
    assert await store.count_running() == 0
    assert await store.list_events(execution_id=ex["id"], after_seq=0, limit=100) == list(evs)


async def test_list_executions_newest_first_with_limit(store: Store) -> None:
    sess = await make_session(store)
    other = await make_session(store)
    rows = [await make_execution(store, sess["id"], at=i) for i in (1, 3, 2)]
    await make_execution(store, other["id"], at=4)

    listed = await store.list_executions(session_id=sess["id"], limit=50)
    assert [r["id"] for r in listed] == [rows[1]["id"], rows[2]["id"], rows[0]["id"]]
    assert [r["id"] for r in await store.list_executions(session_id=sess["id"], limit=1)] == [rows[1]["id"]]


async def test_failing_batch_writes_nothing(store: Store) -> None:
    sess = await make_session(store)
    ex = await make_execution(store, sess["id"])
    await store.write_batch(events=events(ex["id"], sess["id"], 1, range(1, 3)))

    # seq 2 again in the middle of an otherwise good batch, with a finalization riding along.
    bad = events(ex["id"], sess["id"], 3, range(3, 6))
    bad[1] = (bad[1][0], ex["id"], 2, *bad[1][3:])
    fin = {"id": ex["id"], "status": "ok", "ended_at": ts(90), "result": None, "metrics": {}}
    with pytest.raises(StoreConflict):
        await store.write_batch(events=bad, finalize=[fin])

    stored = await store.list_events(execution_id=ex["id"], after_seq=0, limit=100)
    assert [e[2] for e in stored] == [1, 2]
    assert await store.max_event_id() == 2
    assert (await store.get_execution(execution_id=ex["id"]))["status"] == "running"

    # The same rows, fixed, go through afterwards.
    good = events(ex["id"], sess["id"], 3, range(3, 6))
    await store.write_batch(events=good, finalize=[fin])
    assert [e[2] for e in await store.list_events(execution_id=ex["id"], after_seq=0, limit=100)] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert (await store.get_execution(execution_id=ex["id"]))["status"] == "ok"


async def test_event_ids_are_unique(store: Store) -> None:
    sess = await make_session(store)
    ex = await make_execution(store, sess["id"])
    await store.write_batch(events=events(ex["id"], sess["id"], 1, range(1, 3)))
    with pytest.raises(StoreConflict):
        await store.write_batch(events=events(ex["id"], sess["id"], 2, range(3, 5)))
    assert len(await store.list_events(execution_id=ex["id"], after_seq=0, limit=100)) == 2


async def test_event_for_a_missing_execution_is_refused(store: Store) -> None:
    # A foreign-key failure is a store failure naming the operation, not a name conflict.
    sess = await make_session(store)
    with pytest.raises(StoreError, match="could not store events"):
        await store.write_batch(events=events(str(uuid.uuid4()), sess["id"], 1, range(1, 2)))
    with pytest.raises(StoreError, match="could not create execution"):
        await make_execution(store, str(uuid.uuid4()))
    assert await store.max_event_id() == 0
    assert await count(store, "executions") == 0


async def test_list_events_pages_by_seq(store: Store) -> None:
    sess = await make_session(store)
    ex = await make_execution(store, sess["id"])
    # Two batches; pages of 3 walk through both without skipping or repeating a seq.
    await store.write_batch(events=events(ex["id"], sess["id"], 1, range(1, 6)))
    await store.write_batch(events=events(ex["id"], sess["id"], 6, range(6, 11)))

    seen: list[int] = []
    after = 0
    while True:
        page = await store.list_events(execution_id=ex["id"], after_seq=after, limit=3)
        if not page:
            break
        assert len(page) <= 3
        seen.extend(e[2] for e in page)
        after = page[-1][2]
    assert seen == list(range(1, 11))
    assert await store.list_events(execution_id=ex["id"], after_seq=10, limit=3) == []
    assert await store.list_events(execution_id=str(uuid.uuid4()), after_seq=0, limit=3) == []


async def test_list_session_events_by_id_across_executions(store: Store) -> None:
    sess = await make_session(store)
    other = await make_session(store)
    a = await make_execution(store, sess["id"], at=1)
    b = await make_execution(store, sess["id"], at=2)
    x = await make_execution(store, other["id"], at=3)
    # Interleaved ids: a gets 1,2 ; x gets 3 ; b gets 4,5 ; a gets 6.
    await store.write_batch(
        events=events(a["id"], sess["id"], 1, range(1, 3))
        + events(x["id"], other["id"], 3, range(1, 2))
        + events(b["id"], sess["id"], 4, range(1, 3))
        + events(a["id"], sess["id"], 6, range(3, 4))
    )

    rows = await store.list_session_events(session_id=sess["id"], after_id=0, limit=100)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (1, a["id"], 1),
        (2, a["id"], 2),
        (4, b["id"], 1),
        (5, b["id"], 2),
        (6, a["id"], 3),
    ]
    rows = await store.list_session_events(session_id=sess["id"], after_id=2, limit=2)
    assert [r[0] for r in rows] == [4, 5]
    assert [r[0] for r in await store.list_session_events(session_id=other["id"], after_id=0, limit=9)] == [3]
    assert await store.max_event_id() == 6


async def test_max_event_id_starts_at_zero(store: Store) -> None:
    assert await store.max_event_id() == 0


async def test_timestamps_read_back_identical(store: Store) -> None:
    # Full microsecond precision, including trailing zeros and the Z suffix.
    stamp = "2026-03-04T05:06:07.100000Z"
    tpl = {**template_row(), "created_at": stamp, "updated_at": "2026-03-04T05:06:07.000001Z"}
    await store.create_template(template=tpl, settings=SETTINGS)
    sess = {**session_row(tpl["id"]), "created_at": stamp}
    await store.create_session(row=sess)
    ex = {**execution_row(sess["id"]), "started_at": stamp}
    await store.create_execution(row=ex)
    ev = (1, ex["id"], 1, "2026-03-04T05:06:07.999999Z", "console", '{"level":"log","text":"x"}')
    await store.write_batch(
        events=[ev],
        finalize=[
            {
                "id": ex["id"],
                "status": "ok",
                "ended_at": "2026-03-04T05:06:08.000000Z",
                "result": None,
                "metrics": {},
            }
        ],
    )

    got_tpl = await store.get_template(template_id=tpl["id"])
    assert (got_tpl["created_at"], got_tpl["updated_at"]) == (stamp, "2026-03-04T05:06:07.000001Z")
    assert (await store.get_session(session_id=sess["id"]))["created_at"] == stamp
    got_ex = await store.get_execution(execution_id=ex["id"])
    assert (got_ex["started_at"], got_ex["ended_at"]) == (stamp, "2026-03-04T05:06:08.000000Z")
    assert (await store.list_events(execution_id=ex["id"], after_seq=0, limit=1))[0][3] == ev[3]


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

    from server.errors import StoreError

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
