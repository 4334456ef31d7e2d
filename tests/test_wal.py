"""The SQLite write-ahead log gives its space back: a TRUNCATE checkpoint once writes pause, or
at the cap while they go on, that never waits long for a reader (server/store/wal.py)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from server.http.keys import SERVICES
from server.store import wal


def _store(client: Any) -> Any:
    return client.server.app[SERVICES].sessions.store


async def _write_some(api: Any, session_id: str, n: int = 20) -> None:
    for i in range(n):
        await api.value(session_id, f"for (let j = 0; j < 50; j++) console.log('line', j); {i}")


async def test_once_writes_pause_the_log_is_truncated_and_the_data_stays(api, client, monkeypatch):
    store = _store(client)
    s = await api.session()
    await _write_some(api, s["id"])
    assert store.wal_bytes() > 0
    monkeypatch.setattr(wal, "QUIET_S", 0.0)  # "paused" now rather than in half a second
    assert await wal.step(store) == "truncated"
    assert store.wal_bytes() == 0
    assert await wal.step(store) == "nothing"
    status, body = await api.repl(s["id"], "1+1")
    assert status == 201 and body["result"]["json"] == 2
    made = await api.client.post("/api/v1/templates", json={"name": "after-truncate"})
    assert made.status == 201, await made.text()  # every kind of write still begins its own transaction
    history = await api.client.get(f"/api/v1/executions?session_id={s['id']}&limit=100")
    assert len(await history.json()) == 21  # every execution is still there


async def test_at_the_cap_the_log_is_truncated_while_writes_go_on(api, client, monkeypatch):
    store = _store(client)
    s = await api.session()
    await _write_some(api, s["id"], 5)
    monkeypatch.setattr(wal, "CAP_BYTES", 1)
    store.last_write = time.monotonic()  # writes are going on
    assert await wal.step(store) == "truncated"
    assert store.wal_bytes() == 0


async def test_a_reader_on_an_old_snapshot_makes_it_give_up_quickly_not_stall_the_writer(
    api, client, settings, monkeypatch
):
    store = _store(client)
    s = await api.session()
    await _write_some(api, s["id"], 3)
    reader = sqlite3.connect(settings.db_url.split("sqlite:///", 1)[-1], isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM executions").fetchone()[0] == 3
        await _write_some(api, s["id"], 3)  # frames the reader's snapshot does not see
        monkeypatch.setattr(wal, "QUIET_S", 0.0)
        started = time.monotonic()
        assert await wal.step(store) == "busy"
        assert time.monotonic() - started < 2  # waited ~TRUNCATE_WAIT_MS, not busy_timeout
        assert (await api.value(s["id"], "'still writing'"))["json"] == "still writing"
    finally:
        reader.close()
    assert await wal.step(store) == "truncated"
    assert store.wal_bytes() == 0
