"""The terminal side in a real terminal (a pty, through pexpect): Tab completion and background
output in `vm-system repl`, input queued behind another client, and `exec repl` on a terminal
(live by default, exit statuses with --fail-on-error)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import VM_SYSTEM, LiveServer, api_json

pexpect = pytest.importorskip("pexpect")


@pytest.fixture
def session(server: LiveServer, tmp_path: Path) -> str:
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    tid = api_json(server, "template", "create", "pty")["id"]
    api_json(server, "template", "update", tid, "--wall-ms", "60000")
    created = api_json(server, "session", "create", "--template-id", tid, "--worktree-path", str(worktree))
    return str(created["id"])


def spawn(server: LiveServer, tmp_path: Path, *args: str) -> Any:
    if not VM_SYSTEM.exists():
        pytest.fail(f"{VM_SYSTEM} is missing: run `pip install -e .` in the project's venv")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")},
        "HOME": str(tmp_path),
        "NO_COLOR": "1",
        "TERM": "dumb",
        "VM_SYSTEM_URL": server.url,
    }
    child = pexpect.spawn(str(VM_SYSTEM), list(args), env=env, encoding="utf-8", timeout=60)
    child.logfile_read = sys.stderr  # what the terminal showed, in the report of a failure
    return child


def leave(child: Any) -> None:
    """Ctrl+D at the prompt, as a person would (after the prompt is back)."""
    child.sendeof()
    child.expect(pexpect.EOF)


def test_tab_completes_names_and_properties(server: LiveServer, session: str, tmp_path: Path) -> None:
    api_json(
        server,
        "exec",
        "repl",
        session,
        "var alphaLongName = 1; var user = { profile: { name: 'a', nation: 'b' } }",
    )
    child = spawn(server, tmp_path, "repl", session[:8])  # an id prefix works here too
    try:
        child.expect_exact("> ")
        child.send("alph\t")  # one candidate: completed in place
        child.expect_exact("alphaLongName")
        child.send("\r")
        child.expect_exact("=> 1")
        child.expect_exact("> ")
        child.send("user.profile.na\t\t")  # several: a second Tab lists them
        child.expect(r"name\s+nation")
        child.expect_exact("> user.profile.na")
        child.send("ti\t\r")
        child.expect_exact("=> 'b'")
        child.expect_exact("> ")
        child.send("Math.ma\t\r")
        child.expect_exact("Math.max")
        child.expect_exact("=> [Function: max]")
        child.expect_exact("> ")
        leave(child)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_background_output_comes_as_it_happens_and_stop_ends_it(
    server: LiveServer, session: str, tmp_path: Path
) -> None:
    child = spawn(server, tmp_path, "repl", session)
    try:
        child.expect_exact("> ")
        child.sendline("var n = 0; var h = setInterval(() => console.log('tick', ++n), 200); 'set'")
        child.expect_exact("=> 'set'")  # the value comes at once, as in Node
        child.expect_exact("tick 1")  # then the ticks, with nothing typed
        child.expect_exact("> ")
        # A half-typed line survives the ticks printed above it, and runs as typed.
        child.send("4")
        child.expect_exact("tick 3")
        child.expect_exact("> 4")
        child.send("2\r")
        child.expect_exact("=> 42")
        child.expect_exact("> ")
        child.sendline(".stop")
        child.expect_exact("timers stopped")
        child.sendline("typeof n")
        child.expect_exact("=> 'number'")
        child.expect_exact("> ")
        leave(child)
    finally:
        child.close()
    assert child.exitstatus == 0
    runs = api_json(server, "exec", "list", session)
    background = [e for e in runs if e["kind"] == "background"]
    assert [e["status"] for e in background] == ["cancelled"]
    ticks = api_json(server, "exec", "repl", session, "n")["result"]["json"]
    events = api_json(server, "exec", "events", background[0]["id"])
    assert [e["payload"]["text"] for e in events if e["type"] == "console"] == [
        f"tick {i}" for i in range(1, ticks + 1)
    ]


def test_input_waits_behind_another_clients_execution(
    server: LiveServer, session: str, tmp_path: Path
) -> None:
    child = spawn(server, tmp_path, "repl", session)
    try:
        child.expect_exact("> ")
        busy = api_json(
            server, "exec", "repl", session, "await new Promise(r => setTimeout(r, 60000))", "--no-wait"
        )
        child.sendline("'typed while busy'")
        child.expect_exact("(queued: the session is busy; this runs when it is free)")
        api_json(server, "exec", "cancel", busy["id"])
        child.expect_exact("=> 'typed while busy'")
        child.expect_exact("> ")
        leave(child)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_exec_on_a_terminal_streams_and_fail_on_error_sets_the_status(
    server: LiveServer, session: str, tmp_path: Path
) -> None:
    child = spawn(server, tmp_path, "exec", "repl", session, "console.log('hi'); console.warn('careful'); 42")
    child.expect(pexpect.EOF)
    child.close()
    lines = child.before.splitlines()
    assert lines[:3] == ["hi", "[warn] careful", "=> 42"]  # live, as `vm-system repl` prints
    assert lines[3].startswith("status: ok")
    assert child.exitstatus == 0

    child = spawn(server, tmp_path, "exec", "repl", session, "throw new TypeError('no')", "--fail-on-error")
    child.expect_exact("Uncaught TypeError: no")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2

    child = spawn(server, tmp_path, "exec", "repl", session, "7", "--no-follow")
    child.expect(pexpect.EOF)
    child.close()
    assert child.before.splitlines()[1:3] == [
        "Status: ok",
        'Result: {"type":"number","preview":"7","json":7}',
    ]
