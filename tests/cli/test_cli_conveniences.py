"""The CLI's conveniences (issue 12 §3, issue 11): id prefixes and template names, defaults,
`-q`, stdin code, --fail-on-error, remove-capability/remove-startup and `session fork`,
against a real server; the original's forms and lines stay as they were (test_cli_upstream*)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from server.cli import cli
from server.cli.resolve import _pick
from tests.cli.support import CLEAN_ENV, LiveServer, api, api_json


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    wt = tmp_path / "worktree"
    wt.mkdir()
    (wt / "boom.js").write_text("throw new RangeError('out of range')\n")
    (wt / "fine.js").write_text("21 * 2\n")
    return wt


def invoke(server: LiveServer, *args: str, input: str | None = None) -> Result:
    runner = CliRunner(env=CLEAN_ENV)
    return runner.invoke(cli, ["--server-url", server.url, *args], input=input, catch_exceptions=False)


def ok(server: LiveServer, *args: str, input: str | None = None) -> str:
    result = invoke(server, *args, input=input)
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def test_q_prints_only_ids_and_names_and_prefixes_stand_for_ids(server: LiveServer, worktree: Path) -> None:
    tid = ok(server, "template", "create", "by-name", "-q").strip()
    assert len(tid) == 36 and ok(server, "template", "list", "-q").split() == [tid]
    # A session from the template's name, with the UI's defaults for workspace and commit.
    sid = ok(server, "session", "create", "--template-id", "by-name", "--worktree-path", str(worktree), "-q")
    sid = sid.strip()
    shown = ok(server, "session", "get", sid[:8]).splitlines()
    assert f"Session ID: {sid}" in shown
    assert "Workspace ID: default" in shown and "Base Commit: HEAD" in shown
    assert f"Template ID: {tid}" in shown
    assert ok(server, "session", "list", "-q", "--template-id", "by-name").split() == [sid]

    # Prefixes work for the REPL, executions and templates too.
    eid = ok(server, "exec", "repl", sid[:8], "6 * 7", "-q").strip()
    assert ok(server, "exec", "list", sid[:8], "-q").split() == [eid]
    assert "Result: " + '{"type":"number","preview":"42","json":42}' in ok(server, "exec", "get", eid[:10])
    assert ok(server, "exec", "events", eid[:10]).splitlines()[-1].startswith("2 ")
    assert ok(server, "template", "get", tid[:6]).splitlines()[0] == "Template: by-name"
    assert ok(server, "template", "delete", tid[:8]) == f"Deleted template: {tid}\n"  # resolved

    # A prefix that matches nothing is a clear local error, and so is an unknown name.
    missing = api(server, "session", "get", "deadbeef")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error: SESSION_NOT_FOUND: no session id starts with 'deadbeef'")
    unknown = api(server, "template", "get", "no-such-template")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("Error: TEMPLATE_NOT_FOUND: no template is named 'no-such-template'")
    # Full ids, and anything that is no prefix, go to the server as they did.
    short = api(server, "exec", "get", "abc")
    assert short.stderr == (
        "Error: api error (status=400, code=VALIDATION_ERROR): execution_id must be a valid UUID\n"
    )


def test_an_ambiguous_prefix_names_the_candidates(capsys: pytest.CaptureFixture[str]) -> None:
    # Two random ids sharing 4 leading digits are too rare to make through the API.
    ids = [("0c1592c7-aaaa", "ready"), ("0c15aa00-bbbb", "closed")]
    with pytest.raises(click.exceptions.Exit) as raised:
        _pick("0c15", "session", ids, "session list")
    assert raised.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: AMBIGUOUS_ID: '0c15' matches 2 sessions: 0c1592c7-aaa… (ready), ")
    assert err.rstrip().endswith("type more of the id")
    assert _pick("0C1592", "session", ids, "session list") == ids[0][0]  # any case


def test_code_from_stdin_and_fail_on_error_exit_codes(server: LiveServer, worktree: Path) -> None:
    tid = ok(server, "template", "create", "codes", "-q").strip()
    ok(server, "template", "update", tid, "--cpu-ms", "300", "--wall-ms", "1000")
    sid = ok(
        server, "session", "create", "--template-id", tid, "--worktree-path", str(worktree), "-q"
    ).strip()

    out = ok(server, "exec", "repl", sid, "-", input="const fromStdin = 40\nfromStdin + 2\n")
    assert 'Result: {"type":"number","preview":"42","json":42}' in out.splitlines()

    def status(*args: str) -> int:
        return int(api(server, *args).exit_code)

    # Without the flag the original's rule holds: a JavaScript failure is not a CLI failure.
    assert status("exec", "repl", sid, "throw new Error('x')") == 0
    assert status("exec", "repl", sid, "throw new Error('x')", "--fail-on-error") == 2
    assert status("exec", "repl", sid, "while (true) {}", "--fail-on-error") == 3  # cpu_ms
    assert status("exec", "repl", sid, "await new Promise(() => {})", "--fail-on-error") == 3  # wall_ms
    assert status("exec", "repl", sid, "1 + 1", "--fail-on-error") == 0
    assert status("exec", "run-file", sid, "boom.js", "--fail-on-error") == 2
    assert status("exec", "run-file", sid, "fine.js", "--fail-on-error") == 0
    assert status("exec", "repl", sid, "throw 1", "--fail-on-error", "--follow") == 2
    assert status("--json", "exec", "repl", sid, "throw 1", "--fail-on-error") == 2
    # The lines printed are the same as without the flag.
    failed = api(server, "exec", "repl", sid, "missing + 1", "--fail-on-error")
    assert failed.stdout.splitlines()[1] == "Status: error"


def test_remove_capability_and_startup_file(server: LiveServer) -> None:
    tid = ok(server, "template", "create", "removals", "-q").strip()
    cap = ok(server, "template", "add-capability", tid, "--kind", "env", "--name", "HOME", "-q").strip()
    ok(server, "template", "add-capability", tid, "--kind", "env", "--name", "USER")
    startup = ok(server, "template", "add-startup", tid, "init.js", "-q").strip()
    ok(server, "template", "add-startup", tid, "more.js", "--order", "20")

    assert ok(server, "template", "remove-capability", "removals", "env:USER") == (
        f"Removed capability: env:USER from template {tid}\n"
    )
    assert ok(server, "template", "remove-capability", tid, cap[:8]) == (
        f"Removed capability: env:HOME from template {tid}\n"
    )
    assert ok(server, "template", "list-capabilities", tid) == "No capabilities found\n"
    assert ok(server, "template", "remove-startup", tid, "more.js") == (
        f"Removed startup file: more.js from template {tid}\n"
    )
    assert ok(server, "template", "remove-startup", tid, startup) == (
        f"Removed startup file: init.js from template {tid}\n"
    )
    assert ok(server, "template", "list-startup", tid) == "No startup files found\n"
    gone = api(server, "template", "remove-startup", tid, "init.js")
    assert gone.exit_code == 1 and gone.stderr.startswith("Error: NOT_FOUND: no startup file 'init.js'")


def test_session_fork_prints_like_create_and_keeps_the_state(server: LiveServer, worktree: Path) -> None:
    tid = ok(server, "template", "create", "forks", "-q").strip()
    sid = ok(
        server, "session", "create", "--template-id", tid, "--worktree-path", str(worktree), "-q"
    ).strip()
    last = api_json(server, "exec", "repl", sid, "var keep = 41")["id"]

    lines = ok(server, "session", "fork", sid[:8]).splitlines()
    assert lines[0].startswith("Forked session: ")
    fork = lines[0].split(": ", 1)[1]
    assert fork != sid
    assert lines[1:] == [
        "Status: ready",
        f"Template ID: {tid}",
        "Workspace ID: default",
        "Base Commit: HEAD",
        f"Worktree Path: {worktree}",
        f"Forked From: {sid} (after execution {last})",
    ]
    assert '"preview":"42"' in ok(server, "exec", "repl", fork, "keep + 1")
    ok(server, "exec", "repl", fork, "keep = 0")
    assert '"preview":"41"' in ok(server, "exec", "repl", sid, "keep")  # the parent is untouched

    inner = worktree / "sub"
    inner.mkdir()
    narrowed = api_json(
        server, "session", "fork", fork, "--worktree-path", str(inner), "--workspace-id", "w2"
    )
    assert narrowed["worktree_path"] == str(inner) and narrowed["workspace_id"] == "w2"
    assert narrowed["runtime_meta"]["forked_from"]["session_id"] == fork
    only_id = ok(server, "session", "fork", sid, "-q").strip()
    assert len(only_id) == 36 and only_id not in (sid, fork)

    outside = api(server, "session", "fork", sid, "--worktree-path", str(worktree.parent))
    assert outside.exit_code == 1
    assert outside.stderr.startswith("Error: api error (status=422, code=INVALID_PATH): ")
    ok(server, "session", "close", sid)
    closed = api(server, "session", "fork", sid)
    assert closed.stderr.startswith("Error: api error (status=409, code=SESSION_NOT_READY): ")


def test_json_still_wins_and_queue_waits_for_a_busy_session(server: LiveServer, worktree: Path) -> None:
    tid = ok(server, "template", "create", "queue", "-q").strip()
    ok(server, "template", "update", tid, "--wall-ms", "20000")
    sid = ok(
        server, "session", "create", "--template-id", tid, "--worktree-path", str(worktree), "-q"
    ).strip()
    data = json.loads(ok(server, "--json", "template", "get", "queue"))
    assert data["template"]["id"] == tid
    running = api_json(
        server, "exec", "repl", sid, "await new Promise(r => setTimeout(r, 1500)); 1", "--no-wait"
    )
    busy = api(server, "exec", "repl", sid, "2")
    assert busy.exit_code == 1 and "SESSION_BUSY" in busy.stderr
    queued = api_json(server, "exec", "repl", sid, "'after'", "--queue")
    assert queued["result"]["json"] == "after"
    first = api_json(server, "exec", "get", running["id"])
    assert first["status"] == "ok" and first["ended_at"] <= queued["started_at"]
