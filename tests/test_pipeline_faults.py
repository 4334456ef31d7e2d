"""The execution pipeline: event order per kind and outcome, and store failures reported, never hidden.

Faults come from a real store that fails on demand (API.md section 6: every persistence failure
is a 500 INTERNAL naming the operation; no execution stays ``running``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from server.app import create_app
from server.config import Settings
from server.events import EventTuple
from server.store.store import Store
from tests.conftest import assert_gap_free, history, session_body, stored_events

SECRET = "/var/lib/secret-dir/vm.db"


class FaultyStore(Store):
    """The real store, plus faults armed by a test; a failure goes through the store's own error path."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.fail_create_execution = False
        self.fail_events_batch: int | None = None  # fail the Nth batch carrying events, counted from arming
        self.events_batches = 0
        self.fail_finalize = False
        self.failure_delay_s = 0.0  # a slow failure lets more rows queue behind the failing batch

    def arm_events(self, n: int, *, delay_s: float = 0.0) -> None:
        self.events_batches = 0
        self.fail_events_batch = n
        self.failure_delay_s = delay_s

    async def _fail(self, operation: str) -> None:
        delay = self.failure_delay_s

        def boom(_conn: Connection) -> None:
            if delay:
                time.sleep(delay)
            raise OperationalError(
                "INSERT INTO events (id, seq) VALUES (?, ?)", (1, 1), Exception(f"disk I/O error: {SECRET}")
            )

        await self.write(boom, operation=operation)

    async def create_execution(self, *, row: dict[str, Any], events: Sequence[EventTuple] = ()) -> None:
        if self.fail_create_execution:
            await self._fail("create execution")
        await super().create_execution(row=row, events=events)

    async def write_batch(
        self, *, events: Sequence[EventTuple], finalize: Iterable[dict[str, Any]] = ()
    ) -> None:
        finalize = list(finalize)
        if events and self.fail_events_batch is not None:
            self.events_batches += 1
            if self.events_batches == self.fail_events_batch:
                self.fail_events_batch = None
                await self._fail("store events")
        if finalize and self.fail_finalize:
            self.fail_finalize = False
            await self._fail("finalize execution")
        await super().write_batch(events=events, finalize=finalize)


@pytest.fixture
def store(settings: Settings) -> FaultyStore:
    return FaultyStore(settings.db_url)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, store: FaultyStore) -> TestClient:
    return await aiohttp_client(create_app(settings, store=store))


# A script whose console lines arrive over several event batches (timers between them).
TICKS = (
    "let n = 0; await new Promise(res => { const t = setInterval(() => { console.log('tick ' + (++n)); "
    "if (n === 30) { clearInterval(t); res(); } }, 2); }); 'done'"
)


def assert_internal(status: int, body: dict[str, Any], operation: str) -> None:
    assert status == 500, body
    assert body["error"]["code"] == "INTERNAL"
    assert body["error"]["message"] == f"store failure: could not {operation}"
    raw = repr(body)
    for leak in ("Traceback", "INSERT", "SELECT", "disk I/O", SECRET, "/var/", ".py"):
        assert leak not in raw, leak


async def assert_ended(client: TestClient, store: Store, execution_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/executions/{execution_id}")
    ex = await r.json()
    assert ex["status"] != "running"
    assert ex["ended_at"]
    assert (await store.get_execution(execution_id=execution_id))["status"] == ex["status"]
    assert await store.count_running() == 0
    return ex


# ---------------------------------------------------------------------------- faults


async def test_failed_create_execution_is_reported_and_leaves_no_row(api, client, store) -> None:
    s = await api.session()
    store.fail_create_execution = True
    status, body = await api.repl(s["id"], "1+1")
    assert_internal(status, body, "create execution")
    assert await history(client, s["id"]) == []
    assert await store.list_executions(session_id=s["id"], limit=10) == []

    store.fail_create_execution = False
    assert (await api.value(s["id"], "1+1"))["json"] == 2


async def test_failed_create_execution_on_run_file(api, client, store, worktree: Path) -> None:
    (worktree / "main.js").write_text("console.log('hi'); 7")
    s = await api.session()
    store.fail_create_execution = True
    r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": "main.js"})
    assert_internal(r.status, await r.json(), "create execution")
    assert await history(client, s["id"]) == []
    store.fail_create_execution = False
    r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": "main.js"})
    assert r.status == 201
    assert (await r.json())["result"]["json"] == 7


@pytest.mark.parametrize("nth", [1, 2, 3])
async def test_failed_event_batch_is_reported_and_ends_the_execution(api, client, store, nth: int) -> None:
    s = await api.session()
    store.arm_events(nth)
    status, body = await api.repl(s["id"], TICKS)
    assert_internal(status, body, "store events")
    exec_id = body["error"]["details"]["execution_id"]
    assert body["error"]["details"]["session_id"] == s["id"]

    ex = await assert_ended(client, store, exec_id)
    assert ex["status"] == "error"
    assert ex["error"]["code"] == "INTERNAL"
    assert ex["error"]["message"] == "store failure: could not store events"
    events = await stored_events(client, exec_id)
    assert_gap_free(events)
    # Batches before the failing one were committed and are intact.
    if nth > 1:
        assert events[0]["type"] == "input_echo"
        assert events[0]["payload"] == {"text": TICKS}
    assert all(e["type"] in ("input_echo", "console") for e in events)
    assert len(events) < 31  # the failed batch and everything after it is missing

    assert (await api.value(s["id"], "1+1"))["json"] == 2


async def test_slow_failing_batch_does_not_leave_a_gap(api, client, store) -> None:
    """Rows queued while the failing batch was in flight must not be stored after the hole."""
    s = await api.session()
    store.arm_events(2, delay_s=0.05)
    status, body = await api.repl(s["id"], TICKS)
    assert_internal(status, body, "store events")
    exec_id = body["error"]["details"]["execution_id"]
    await assert_ended(client, store, exec_id)
    assert_gap_free(await stored_events(client, exec_id))
    assert (await api.value(s["id"], "1+1"))["json"] == 2


async def test_failed_finalization_is_reported_and_not_left_running(api, client, store) -> None:
    s = await api.session()
    store.fail_finalize = True
    status, body = await api.repl(s["id"], "console.log('x'); 1+1")
    assert_internal(status, body, "finalize execution")
    exec_id = body["error"]["details"]["execution_id"]

    ex = await assert_ended(client, store, exec_id)
    assert ex["status"] == "error"
    assert ex["error"] == {"code": "INTERNAL", "message": "store failure: could not finalize execution"}
    events = await stored_events(client, exec_id)
    assert_gap_free(events)
    assert [e["type"] for e in events][:1] in ([], ["input_echo"])

    assert (await api.value(s["id"], "1+1"))["json"] == 2
    # The next execution's events are stored normally.
    status, body = await api.repl(s["id"], "console.log('again'); 3")
    assert status == 201
    assert await stored_events(client, body["id"]) == body["events"]


async def test_failed_startup_execution_fails_session_creation(api, client, store, worktree: Path) -> None:
    (worktree / "init.js").write_text("var ready = true;")
    tpl = await api.template()
    r = await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "init.js"})
    assert r.status == 201
    store.fail_create_execution = True
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    body = await r.json()
    assert_internal(r.status, body, "create execution")
    sessions = await store.list_sessions(template_id=tpl["id"])
    assert [x["status"] for x in sessions] == ["crashed"]
    assert await store.count_running() == 0

    store.fail_create_execution = False
    s = await api.session(tpl["id"])
    assert (await api.value(s["id"], "ready"))["json"] is True


# ---------------------------------------------------------------------------- event order contract


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_repl_ok_order(api, client) -> None:
    s = await api.session()
    status, body = await api.repl(s["id"], "console.log('a'); console.warn('b'); 1+1")
    assert status == 201 and body["status"] == "ok"
    assert kinds(body["events"]) == ["input_echo", "console", "console", "value"]
    assert body["events"][0]["payload"] == {"text": "console.log('a'); console.warn('b'); 1+1"}
    assert [e["payload"]["level"] for e in body["events"][1:3]] == ["log", "warn"]
    assert body["events"][-1]["payload"] == body["result"]
    assert_gap_free(body["events"])
    assert await stored_events(client, body["id"]) == body["events"]


async def test_repl_exception_order(api, client) -> None:
    s = await api.session()
    status, body = await api.repl(s["id"], "console.log('a'); throw new RangeError('boom')")
    assert status == 201 and body["status"] == "error"
    assert kinds(body["events"]) == ["input_echo", "console", "exception"]
    assert body["events"][-1]["payload"]["message"].startswith("RangeError: boom")
    assert_gap_free(body["events"])
    assert await stored_events(client, body["id"]) == body["events"]


@pytest.mark.parametrize(
    ("source", "status", "terminal"),
    [
        ("console.log('one'); console.error('two'); 40 + 2", "ok", "value"),
        ("console.log('one'); null.x", "error", "exception"),
    ],
)
async def test_run_file_order(api, client, worktree: Path, source: str, status: str, terminal: str) -> None:
    (worktree / "script.js").write_text(source)
    s = await api.session()
    r = await client.post("/api/v1/executions/run-file", json={"session_id": s["id"], "path": "./script.js"})
    assert r.status == 201
    body = await r.json()
    assert body["status"] == status
    assert body["kind"] == "run_file" and body["path"] == "script.js"
    assert kinds(body["events"]) == ["console"] * (2 if status == "ok" else 1) + [terminal]
    if status == "ok":
        assert body["result"]["json"] == 42
    assert_gap_free(body["events"])
    assert await stored_events(client, body["id"]) == body["events"]


async def test_startup_executions_are_recorded(api, client, worktree: Path) -> None:
    (worktree / "a.js").write_text("console.log('first'); var base = 40;")
    (worktree / "b.js").write_text("var total = base + 2; total")
    tpl = await api.template()
    for path, order in (("b.js", 2), ("a.js", 1)):
        r = await client.post(
            f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": path, "order_index": order}
        )
        assert r.status == 201
    s = await api.session(tpl["id"])

    listed = await history(client, s["id"])
    assert [(x["kind"], x["path"], x["status"]) for x in reversed(listed)] == [
        ("startup", "a.js", "ok"),
        ("startup", "b.js", "ok"),
    ]
    first, second = reversed(listed)
    assert kinds(await stored_events(client, first["id"])) == ["console", "value"]
    ev = await stored_events(client, second["id"])
    assert kinds(ev) == ["value"]
    assert ev[0]["payload"]["json"] == 42
    assert (await api.value(s["id"], "total"))["json"] == 42


async def test_event_ids_increase_across_the_whole_server(api, client) -> None:
    a, b = await api.session(), await api.session()
    code = (
        "let k = 0; await new Promise(res => { const t = setInterval(() => { console.log('k' + (++k)); "
        "if (k === 10) { clearInterval(t); res(); } }, 1); }); k"
    )
    (sa, ba), (sb, bb) = await asyncio.gather(api.repl(a["id"], code), api.repl(b["id"], code))
    assert sa == sb == 201
    for body in (ba, bb):
        assert kinds(body["events"]) == ["input_echo"] + ["console"] * 10 + ["value"]
        assert_gap_free(body["events"])
        assert await stored_events(client, body["id"]) == body["events"]
    all_ids = [e["id"] for e in ba["events"] + bb["events"]]
    assert len(set(all_ids)) == len(all_ids)

    later = (await api.repl(a["id"], "1"))[1]
    assert min(e["id"] for e in later["events"]) > max(all_ids)


async def test_failed_event_batch_without_waiting_still_ends_the_execution(api, client, store) -> None:
    s = await api.session()
    store.arm_events(2)
    r = await client.post(
        "/api/v1/executions/repl", json={"session_id": s["id"], "input": TICKS, "wait": False}
    )
    assert r.status == 202
    exec_id = (await r.json())["id"]
    for _ in range(400):
        ex = await (await client.get(f"/api/v1/executions/{exec_id}")).json()
        if ex["status"] != "running":
            break
        await asyncio.sleep(0.01)
    ex = await assert_ended(client, store, exec_id)
    assert ex["error"] == {"code": "INTERNAL", "message": "store failure: could not store events"}
    assert_gap_free(await stored_events(client, exec_id))
    assert (await api.value(s["id"], "1+1"))["json"] == 2
