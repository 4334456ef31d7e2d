"""A cluster (API.md §14): three real `vm-system serve` nodes on one fresh PostgreSQL database.

The nodes are shared by the tests of this module, in order: state and every session-bound
request across nodes, WebSocket messages forwarded, a live stream followed from a third node and
resumed on another, the listening connection lost and regained, placement when a node is full,
then the failures: a node SIGKILLed (reaped by exactly one other), a node paused past the
timeout that comes back, a SIGTERM, a restart. The SQLite refusal needs no PostgreSQL.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from server.store import notices
from tests.cluster_support import ROOT, WAIT, Node, Socket, fresh_database, wait_for
from tests.conftest import INTERRUPTED_SESSION, assert_gap_free, free_port

LOST = "node {} was lost: runtime state does not survive a node failure"
FOREVER = "let i = 0; setInterval(() => console.log('tick ' + (++i)), 5); 'started'"
UNLIMITED = {"cpu_ms": 0, "wall_ms": 0, "max_events": 0, "max_output_kb": 0}
# 2,000 lines over a second or two, so that a reader is still reading while it runs.
PACED_2000 = (
    "for (let i = 1; i <= 2000; i++) { console.log('line ' + i); "
    "if (i % 25 === 0) await new Promise(r => setTimeout(r, 15)); } 'done'"
)

pytestmark = pytest.mark.timeout(600)
Nodes = dict[str, Node]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    tmp = tmp_path_factory.mktemp("cluster")
    with fresh_database() as db:
        nodes = {
            "a": Node("node-a", db, tmp, max_sessions=3),
            "b": Node("node-b", db, tmp, max_sessions=3),
            "c": Node("node-c", db, tmp, max_sessions=4),
        }
        for node in nodes.values():
            node.start()
        try:
            for node in nodes.values():
                node.wait_ready()
            yield nodes
        finally:
            for node in nodes.values():
                node.stop()


@pytest.fixture(scope="module")
def worktree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wt = tmp_path_factory.mktemp("worktree")
    (wt / "main.js").write_text("x * 2")
    return wt


def close_all(node: Node) -> None:
    """Close every live session of the cluster (through ``node``: forwarded to their nodes)."""
    for status in ("ready", "starting"):
        for s in node.ok("GET", f"/api/v1/sessions?status={status}"):
            node.ok("POST", f"/api/v1/sessions/{s['id']}/close")


# ---------------------------------------------------------------------------- nodes


def test_nodes_are_listed_and_sessions_carry_their_node(cluster: Nodes, worktree: Path) -> None:
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    for node in (a, b, c):
        listed = node.nodes()
        assert set(listed) == {"node-a", "node-b", "node-c"}
        for other in (a, b, c):
            row = listed[other.name]
            assert row["url"] == other.url and row["status"] == "up" and row["version"]
            assert row["heartbeat_at"] >= row["started_at"]
        assert node.ok("GET", "/api/v1/runtime/summary")["node_id"] == node.name

    s = b.session(b.template()["id"], worktree)
    assert s["node_id"] == "node-b"
    assert c.get_session(s["id"])["node_id"] == "node-b"
    assert a.nodes()["node-b"]["sessions"] == 1
    # The answering node describes itself: the session is active on b only.
    assert b.ok("GET", "/api/v1/runtime/summary")["active_session_ids"] == [s["id"]]
    assert a.ok("GET", "/api/v1/runtime/summary")["active_session_ids"] == []
    # Heartbeats move on.
    before = a.nodes()["node-c"]["heartbeat_at"]
    wait_for(lambda: a.nodes()["node-c"]["heartbeat_at"] > before, "a newer heartbeat of node-c")
    c.ok("POST", f"/api/v1/sessions/{s['id']}/close")
    assert b.get_session(s["id"])["status"] == "closed"


def test_session_state_and_requests_cross_nodes(cluster: Nodes, worktree: Path) -> None:
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    s = a.session(a.template()["id"], worktree)
    assert a.value(s["id"], "var x = 40") is None
    repl = {"session_id": s["id"], "input": "x + 2"}
    status, body, headers = b.call("POST", "/api/v1/executions/repl", repl)
    assert status == 201 and body["result"]["json"] == 42, body
    assert [e["type"] for e in body["events"]] == ["input_echo", "value"]
    # One request, one id: the owner logged the id the client got from the node it asked.
    # (The access log is written in batches: wait for its next flush.)
    wait_for(lambda: headers["X-Request-Id"] in a.log(), "the forwarded request in the owner's log")
    assert c.value(s["id"], "x + 2") == 42

    # run-file, completion, errors: the owner's answer, unchanged.
    status, ran, _ = c.call("POST", "/api/v1/executions/run-file", {"session_id": s["id"], "path": "main.js"})
    assert status == 201 and ran["result"]["json"] == 80 and ran["path"] == "main.js", ran
    a.value(s["id"], "var longVariableName = 1")
    found = b.ok("POST", f"/api/v1/sessions/{s['id']}/complete", {"input": "longVar"})
    assert [cand["name"] for cand in found["candidates"]] == ["longVariableName"]
    status, missing, _ = b.call(
        "POST", "/api/v1/executions/run-file", {"session_id": s["id"], "path": "no.js"}
    )
    assert status == 404 and missing["error"]["code"] == "FILE_NOT_FOUND"
    status, thrown = c.repl(s["id"], "null.boom")
    assert status == 201 and thrown["status"] == "error" and "TypeError" in thrown["error"]["message"]

    # A busy session answers 409 with the running execution's id, through any node.
    spin = c.launch(s["id"], "while(true){}")
    assert spin["status"] == "running"
    status, busy = b.repl(s["id"], "1")
    assert status == 409 and busy["error"]["details"]["running_execution_id"] == spin["id"], busy
    # Cancel through a third node; the session rolls back to before the spin.
    cancelled = b.ok("POST", f"/api/v1/executions/{spin['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    status, again, _ = c.call("POST", f"/api/v1/executions/{spin['id']}/cancel")
    assert status == 409 and again["error"]["code"] == "EXECUTION_NOT_RUNNING"
    assert c.value(s["id"], "x") == 40

    # Fork through another node: it lives with its parent (the checkpoint is there).
    fork = c.ok("POST", f"/api/v1/sessions/{s['id']}/fork")
    assert fork["node_id"] == "node-a" and fork["runtime_meta"]["forked_from"]["session_id"] == s["id"]
    assert b.value(fork["id"], "x") == 40

    # Reads come from the database, on any node, identical.
    assert b.events(body["id"]) == a.events(body["id"]) == body["events"]
    assert [e["id"] for e in c.ok("GET", f"/api/v1/executions?session_id={s['id']}")] == [
        e["id"] for e in a.ok("GET", f"/api/v1/executions?session_id={s['id']}")
    ]
    status, unknown = b.repl("00000000-0000-4000-8000-000000000000", "1")
    assert status == 404 and unknown["error"]["code"] == "SESSION_NOT_FOUND"

    # Close through a non-owner: closed for everyone, idempotent everywhere.
    assert c.ok("POST", f"/api/v1/sessions/{s['id']}/close")["status"] == "closed"
    assert s["id"] not in a.ok("GET", "/api/v1/runtime/summary")["active_session_ids"]
    status, closed = b.repl(s["id"], "x")
    assert status == 409 and closed["error"]["code"] == "SESSION_NOT_READY"
    assert b.ok("DELETE", f"/api/v1/sessions/{s['id']}")["status"] == "closed"
    c.ok("POST", f"/api/v1/sessions/{fork['id']}/close")


async def test_websocket_messages_about_another_nodes_session(cluster: Nodes, worktree: Path) -> None:
    a, c = cluster["a"], cluster["c"]
    s = a.session(a.template()["id"], worktree)
    a.value(s["id"], "var x = 40")
    ws = await Socket.open(c)
    try:
        accepted = await ws.request(type="execute", session_id=s["id"], input="x + 2")
        assert accepted["type"] == "accepted", accepted
        sub = accepted["subscription"]
        await ws.completed(sub)
        assert [e["type"] for e in ws.events(sub)] == ["input_echo", "value"], ws.messages
        assert ws.events(sub)[-1]["payload"].get("json") == 42, ws.messages
        assert ws.of(sub, "execution")[-1]["execution"]["status"] == "ok"

        # Told of the end by this node, the client may go on at once: the session is free.
        for i in range(20):
            again = await ws.request(type="execute", session_id=s["id"], input=f"x + {i}")
            assert again["type"] == "accepted", again
            await ws.completed(again["subscription"])

        ran = await ws.request(type="run_file", session_id=s["id"], path="main.js")
        await ws.completed(ran["subscription"])
        assert ws.events(ran["subscription"])[-1]["payload"]["json"] == 80

        found = await ws.request(type="complete", session_id=s["id"], input="Mat")
        assert found["type"] == "completions" and "Math" in [x["name"] for x in found["candidates"]]

        # Queued behind a running execution: told at once, then accepted once it can run.
        nap = "await new Promise(r => setTimeout(r, 800)); 1"
        slow = await ws.request(type="execute", session_id=s["id"], input=nap)
        queued_id = await ws.send(type="execute", session_id=s["id"], input="x", queue=True)
        await ws.wait(
            lambda m: [x for x in m if (x.get("reply_to"), x["type"]) == (queued_id, "queued")], "q"
        )
        later = await ws.reply(queued_id)
        assert later["type"] == "accepted"
        await ws.completed(later["subscription"])
        assert ws.events(later["subscription"])[-1]["payload"]["json"] == 40
        assert ws.of(slow["subscription"], "complete")

        spin = await ws.request(type="execute", session_id=s["id"], input="while(true){}")
        cancelled = await ws.request(type="cancel", execution_id=spin["execution"]["id"])
        assert cancelled["type"] == "cancelled" and cancelled["execution"]["status"] == "cancelled"
        await ws.completed(spin["subscription"])
        assert ws.events(spin["subscription"])[-1]["payload"]["state"] == "rolled_back"

        err = await ws.request(type="execute", session_id=s["id"], input="x", queue="yes")
        assert err["type"] == "error" and err["error"]["code"] == "INVALID_REQUEST"
        a.ok("POST", f"/api/v1/sessions/{s['id']}/close")
        gone = await ws.request(type="execute", session_id=s["id"], input="x")
        assert gone["type"] == "error" and gone["error"]["code"] == "SESSION_NOT_READY"
    finally:
        await ws.close()


# ---------------------------------------------------------------------------- live events


async def test_a_live_stream_crosses_nodes_and_resumes_on_another(cluster: Nodes, worktree: Path) -> None:
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    s = a.session(a.template(**UNLIMITED)["id"], worktree)
    watcher = await Socket.open(c)  # the whole session, on a node that does not hold it
    first = await Socket.open(c)
    try:
        watch = await watcher.subscribe(session_id=s["id"])
        run = b.launch(s["id"], PACED_2000)
        sub1 = await first.subscribe(execution_id=run["id"])
        await first.wait(lambda m: len(first.events(sub1)) >= 400, "400 events on the first socket")
        assert b.ok("GET", f"/api/v1/executions/{run['id']}")["status"] == "running"  # still live
        await first.close()
        got = first.events(sub1)
        second = await Socket.open(b)
        try:
            sub2 = await second.subscribe(execution_id=run["id"], after_seq=got[-1]["seq"])
            await second.completed(sub2, within=120)
            got += second.events(sub2)
            assert second.of(sub2, "execution")[-1]["execution"]["status"] == "ok"
        finally:
            await second.close()
        assert len(got) == 2002, len(got)  # input echo, 2,000 lines, the value
        assert_gap_free(got)
        assert [e["payload"].get("text") for e in got[1:-1]] == [f"line {i}" for i in range(1, 2001)]
        assert got == a.events(run["id"])

        # The session subscriber on the third node saw the start, every event once, the end.
        await watcher.told(watch, "execution", "ok")
        assert [x["execution"]["status"] for x in watcher.of(watch, "execution")] == ["running", "ok"]
        assert watcher.events(watch) == got
    finally:
        await watcher.close()
        a.ok("POST", f"/api/v1/sessions/{s['id']}/close")


async def test_the_listening_connection_lost_and_regained_loses_nothing(
    cluster: Nodes, worktree: Path
) -> None:
    import psycopg

    a, c = cluster["a"], cluster["c"]
    s = a.session(a.template(**UNLIMITED)["id"], worktree)
    ws = await Socket.open(c)
    try:
        sub = await ws.subscribe(session_id=s["id"])
        run = a.launch(s["id"], PACED_2000)
        await ws.wait(lambda m: len(ws.events(sub)) >= 200, "200 events before the cut")
        with psycopg.connect(c.db, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                ("vm-system listen node-c",),
            ).fetchall()
        assert cut == [(True,)]
        await ws.told(sub, "execution", "ok", within=120)
        got = ws.events(sub)
        assert len(got) == 2002 and got == a.events(run["id"])
        assert_gap_free(got)
        assert re.search(r"^vm_system_cluster_listener_reconnects_total 1\.0$", c.text("/metrics"), re.M)
    finally:
        await ws.close()
        a.ok("POST", f"/api/v1/sessions/{s['id']}/close")


# ---------------------------------------------------------------------------- placement


def test_a_full_node_places_sessions_on_the_node_with_most_room(cluster: Nodes, worktree: Path) -> None:
    a, b = cluster["a"], cluster["b"]
    close_all(a)
    tpl = a.template()["id"]
    placed = [a.session(tpl, worktree)["node_id"] for _ in range(3)]
    assert placed == ["node-a"] * 3  # where the creation arrived, while it has room
    # a is full (3): the next goes to c (room 4) rather than b (room 3), then wherever most room is.
    assert a.session(tpl, worktree)["node_id"] == "node-c"
    counts = {"node-a": 3, "node-b": 0, "node-c": 1}
    for _ in range(6):
        counts[a.session(tpl, worktree)["node_id"]] += 1
    assert counts == {"node-a": 3, "node-b": 3, "node-c": 4}
    status, full, _ = a.call(
        "POST",
        "/api/v1/sessions",
        {"template_id": tpl, "workspace_id": "ws", "base_commit_oid": "x", "worktree_path": str(worktree)},
    )
    assert status == 503 and full["error"]["code"] == "TOO_MANY_SESSIONS"
    assert {n: r["sessions"] for n, r in b.nodes().items()} == counts
    metrics = a.text("/metrics")
    assert re.search(r'^vm_system_sessions\{status="ready"\} 3\.0$', metrics, re.M)
    assert re.search(
        r'^vm_system_forwarded_requests_total\{outcome="ok",transport="rest"\} [1-9]', metrics, re.M
    )
    for name in ("events_written_total", "checkpoints_total", "rollbacks_total", "heartbeat_age_seconds"):
        assert f"vm_system_{name} " in metrics
    close_all(a)


# ---------------------------------------------------------------------------- failures


async def test_a_killed_node_is_reaped_once_and_its_subscribers_told(cluster: Nodes, worktree: Path) -> None:
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    tpl = b.template(**UNLIMITED)["id"]
    s, idle = b.session(tpl, worktree), b.session(tpl, worktree)
    run = b.launch(s["id"], FOREVER)
    ws = await Socket.open(a)
    try:
        on_exec = await ws.subscribe(execution_id=run["id"])
        on_session = await ws.subscribe(session_id=s["id"])
        await ws.wait(lambda m: len(ws.events(on_exec)) >= 20, "ticks before the kill")
        b.signal(signal.SIGKILL)
        assert b.proc is not None and b.proc.wait(timeout=30) == -signal.SIGKILL
        # Before the cluster declares it lost, its sessions cannot be reached.
        status, down = c.repl(idle["id"], "1")
        assert status == 503 and down["error"]["code"] == "NODE_UNAVAILABLE", down
        assert down["error"]["details"]["node_id"] == "node-b"

        await ws.completed(on_exec)
        ended = ws.of(on_exec, "execution")[-1]["execution"]
        assert ended["status"] == "error" and ended["error"]["code"] == "INTERRUPTED"
        assert ended["error"]["message"] == LOST.format("node-b")
        await ws.told(on_session, "session", "crashed")
    finally:
        await ws.close()
    assert a.nodes()["node-b"]["status"] == "lost"
    for sid in (s["id"], idle["id"]):
        row = c.get_session(sid)
        assert row["status"] == "crashed" and row["last_error"] == LOST.format("node-b")
    stored = a.events(run["id"])
    assert_gap_free(stored)
    assert [e["type"] for e in stored].count("system") == 1 and stored[-1]["type"] == "system"
    assert stored[-1]["payload"]["code"] == "INTERRUPTED"
    assert ws.events(on_exec) == stored  # live, then the closing event, nothing missing
    # Exactly one node reaped it.
    assert sum(n.log().count("node node-b was lost (no heartbeat") for n in (a, c)) == 1
    status, gone = a.repl(idle["id"], "1")
    assert status == 409 and gone["error"]["code"] == "SESSION_NOT_READY"

    # Its return: the same node id registers again; what it had stays crashed.
    b.start()
    b.wait_ready()
    assert a.nodes()["node-b"]["status"] == "up"
    assert c.get_session(s["id"])["status"] == "crashed"
    assert b.session(tpl, worktree)["node_id"] == "node-b"
    close_all(a)


async def test_a_paused_node_comes_back_finds_itself_lost_and_rejoins(cluster: Nodes, worktree: Path) -> None:
    a, c = cluster["a"], cluster["c"]
    tpl = c.template(**UNLIMITED)["id"]
    s, idle = c.session(tpl, worktree), c.session(tpl, worktree)
    worker = s["runtime_meta"]["worker_pid"]
    run = c.launch(s["id"], FOREVER)
    wait_for(lambda: len(a.events(run["id"])) >= 20, "ticks before the pause")
    c.signal(signal.SIGSTOP)
    try:
        # A request forwarded to the paused node waits for it... until the cluster gives up on it.
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(a.repl, idle["id"], "1")
            wait_for(
                lambda: a.get_session(s["id"])["status"] == "crashed", "the paused node's session crashed"
            )
            assert a.nodes()["node-c"]["status"] == "lost"
            status, answer = waiting.result(timeout=WAIT)
        assert status == 503 and answer["error"]["code"] == "NODE_UNAVAILABLE", answer
        assert "declared lost" in answer["error"]["message"]
    finally:
        c.signal(signal.SIGCONT)
    # Back: it finds itself lost, ends its workers, and is up again.
    wait_for(lambda: a.nodes()["node-c"]["status"] == "up", "node-c up again")
    wait_for(lambda: not _alive(worker), "the lost session's worker gone")
    assert "finds itself lost" in c.log()
    row = a.get_session(s["id"])
    assert row["status"] == "crashed" and row["last_error"] == LOST.format("node-c")
    stored = a.events(run["id"])
    assert_gap_free(stored)
    assert stored[-1]["type"] == "system" and [e["type"] for e in stored].count("system") == 1
    assert a.ok("GET", f"/api/v1/executions/{run['id']}")["error"]["code"] == "INTERRUPTED"
    assert s["id"] not in c.ok("GET", "/api/v1/runtime/summary")["active_session_ids"]
    # And it serves again.
    fresh = c.session(c.template()["id"], worktree)
    assert a.value(fresh["id"], "6 * 7") == 42
    assert re.search(r"^vm_system_node_rejoins_total 1\.0$", c.text("/metrics"), re.M)
    close_all(a)


async def test_sigterm_stops_a_node_and_closes_its_sessions(cluster: Nodes, worktree: Path) -> None:
    a, c = cluster["a"], cluster["c"]
    s = c.session(c.template()["id"], worktree)
    ws = await Socket.open(a)
    try:
        sub = await ws.subscribe(session_id=s["id"])
        c.signal(signal.SIGTERM)
        assert c.proc is not None and c.proc.wait(timeout=60) == 0, c.log()[-3000:]
        await ws.told(sub, "session", "closed")
    finally:
        await ws.close()
    assert a.nodes()["node-c"]["status"] == "stopped"
    row = a.get_session(s["id"])
    assert row["status"] == "closed" and row["last_error"] == "closed at server shutdown"
    c.start()
    c.wait_ready()


def test_a_restart_leaves_other_nodes_sessions_alone(cluster: Nodes, worktree: Path) -> None:
    a, b = cluster["a"], cluster["b"]
    tpl = a.template()["id"]
    mine, theirs = a.session(tpl, worktree), b.session(tpl, worktree)
    b.value(theirs["id"], "var kept = 'yes'")
    a.signal(signal.SIGKILL)
    assert a.proc is not None and a.proc.wait(timeout=30) == -signal.SIGKILL
    a.start()
    a.wait_ready()
    # Its own session is gone: closed by its start-up, or crashed if the others reaped it first.
    row = b.get_session(mine["id"])
    assert (row["status"], row["last_error"]) in (
        ("closed", INTERRUPTED_SESSION),
        ("crashed", LOST.format("node-a")),
    )
    # The other node's session is untouched, and reachable through the restarted node.
    assert b.get_session(theirs["id"])["status"] == "ready"
    assert a.value(theirs["id"], "kept") == "yes"
    close_all(a)


def test_a_second_process_with_a_nodes_id_takes_it_over(cluster: Nodes, worktree: Path) -> None:
    a, b = cluster["a"], cluster["b"]
    old = a.session(a.template()["id"], worktree)
    usurper = Node("node-a", a.db, a.tmp, max_sessions=3)  # same id, another port
    usurper.start()
    try:
        usurper.wait_ready()
        # The first process sees its id taken at its next heartbeat, and stops (as on SIGTERM).
        assert a.proc is not None and a.proc.wait(timeout=WAIT) == 0, a.log()[-3000:]
        assert "another process has registered node id node-a" in a.log()
        listed = b.nodes()["node-a"]
        assert listed["status"] == "up" and listed["url"] == usurper.url
        # The newcomer reconciled the id's rows at its start; it serves the id from now on.
        assert b.get_session(old["id"])["status"] == "closed"
        fresh = usurper.session(usurper.template()["id"], worktree)
        assert b.value(fresh["id"], "1 + 1") == 2
    finally:
        usurper.stop()
    a.start()
    a.wait_ready()


# ---------------------------------------------------------------------------- one node on SQLite


def test_a_second_server_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "one.db"

    def serve() -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        cmd = [sys.executable, "-m", "server.cli", "serve", "--listen", f"127.0.0.1:{port}"]
        cmd += ["--db", str(db), "--cache-dir", str(tmp_path / "cache")]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return proc, f"http://127.0.0.1:{port}/api/v1/health"

    def answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    first, health = serve()
    try:
        wait_for(lambda: answers(health), "the first server answering")
        second, _ = serve()
        out, _ = second.communicate(timeout=WAIT)
        assert second.returncode == 2, out
        assert f"the database {db} is in use by another vm-system server" in out
        assert "PostgreSQL" in out
        assert answers(health)  # the first one is unharmed
    finally:
        first.terminate()
        first.wait(timeout=30)
    # Once the first has stopped, the file is free again.
    third, health = serve()
    try:
        wait_for(lambda: answers(health), "a server on the freed file")
    finally:
        third.terminate()
        third.wait(timeout=30)


def test_notices_fit_in_a_notify_payload() -> None:
    rows = [(1000 + i, f"{i:08d}-0000-4000-8000-000000000000", 5, "ts", "console", "{}") for i in range(400)]
    entries = notices.batch_entries(rows, [{"id": "e" * 36, "session_id": "s" * 36, "status": "ok"}])
    payloads = notices.payloads("node-a", entries)
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    parsed = [n for p in payloads for n in notices.parse(p)[1]]
    assert parsed[0] == notices.EventsNotice("00000000-0000-4000-8000-000000000000", 5, 5, 1000, 1000)
    assert parsed[-1] == notices.ExecutionNotice("e" * 36, "s" * 36, "ok")
    assert len(parsed) == 401 and {notices.parse(p)[0] for p in payloads} == {"node-a"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
