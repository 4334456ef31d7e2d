"""The store's records against real databases: templates, sessions, executions and events."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from server.errors import StoreConflict, StoreError
from server.store.store import Store
from tests.store.conftest import (
    SETTINGS,
    capability_row,
    count,
    events,
    execution_row,
    make_execution,
    make_session,
    session_row,
    startup_file_row,
    template_row,
    ts,
)

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


async def test_list_executions_pages_by_a_before_cursor_even_on_equal_start_times(store: Store) -> None:
    sess = await make_session(store)
    other = await make_session(store)
    rows = [await make_execution(store, sess["id"], at=at) for at in (1, 2, 2, 2, 3)]
    expected = [r["id"] for r in sorted(rows, key=lambda r: (r["started_at"], r["id"]), reverse=True)]
    seen: list[str] = []
    before = None
    while True:
        page = await store.list_executions(session_id=sess["id"], limit=2, before=before)
        assert page is not None
        if not page:
            break
        seen += [r["id"] for r in page]
        before = page[-1]["id"]
    assert seen == expected  # the ties at 2 come in id order, none twice, none skipped
    foreign = await make_execution(store, other["id"], at=1)
    assert await store.list_executions(session_id=sess["id"], limit=2, before=foreign["id"]) is None


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
