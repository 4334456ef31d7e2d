"""The installed `vm-system` command as a subprocess, against a served subprocess and in a terminal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import (
    VM_SYSTEM,
)
from tests.conftest import free_port, stop_process

# -- the installed command, as a subprocess ----------------------------------------------------


@pytest.fixture
def vm_system() -> Path:
    if not VM_SYSTEM.exists():
        pytest.fail(f"{VM_SYSTEM} is missing: run `pip install -e .` in the project's venv")
    return VM_SYSTEM


@pytest.fixture
def served(tmp_path: Path, vm_system: Path) -> Iterator[str]:
    """`vm-system serve` as a subprocess on a free port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")  # a file, not a pipe nobody drains
    proc = subprocess.Popen(
        [
            str(vm_system),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            str(tmp_path / "db.sqlite"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vm-system serve did not start: {log_path.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(proc)
        log.close()


def sh(vm_system: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
    environ.update(env)
    return subprocess.run(
        [str(vm_system), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def sh_session(vm_system: Path, served: str, template_id: str, worktree: Path) -> str:
    """`vm-system session create` through the installed command; returns the new session's id."""
    created = sh(
        vm_system,
        "--server-url",
        served,
        "--json",
        "session",
        "create",
        "--template-id",
        template_id,
        "--workspace-id",
        "w",
        "--base-commit",
        "c",
        "--worktree-path",
        str(worktree),
    )
    assert created.returncode == 0, created.stderr
    return str(json.loads(created.stdout)["id"])


def test_installed_command_against_a_served_subprocess(
    served: str, vm_system: Path, worktree: Path, tmp_path: Path
) -> None:
    health = sh(vm_system, "--server-url", served, "ops", "health")
    assert (health.returncode, health.stdout) == (0, '{\n  "status": "ok"\n}\n')

    tid = json.loads(sh(vm_system, "--json", "template", "create", "sub", VM_SYSTEM_URL=served).stdout)["id"]
    sid = sh_session(vm_system, served, tid, worktree)

    # Piped into the interactive REPL: no prompts, multi-line statements, state kept.
    repl = sh(
        vm_system,
        "--server-url",
        served,
        "repl",
        sid,
        stdin='var x = 40\nfunction add(a) {\n  return a +\n    2\n}\nadd(x)\n"s"\n',
        HOME=str(tmp_path),
    )
    assert repl.returncode == 0, repl.stderr
    assert repl.stdout.splitlines() == ["=> undefined", "=> undefined", "=> 42", "=> 's'"]
    assert not (tmp_path / ".vm-system" / "history").exists()  # history is for terminals only

    error = sh(vm_system, "--server-url", served, "exec", "get", "nope")
    assert error.returncode == 1
    assert error.stderr == (
        "Error: api error (status=400, code=VALIDATION_ERROR): execution_id must be a valid UUID\n"
    )

    # A second server on the same address fails with one line, not a traceback.
    port = served.rsplit(":", 1)[1]
    clash = sh(
        vm_system,
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--db",
        str(tmp_path / "other.sqlite"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert clash.returncode == 1
    assert "Error: SERVE: cannot start the server: " in clash.stderr
    assert "Traceback" not in clash.stderr


def test_interactive_repl_in_a_terminal(served: str, vm_system: Path, worktree: Path, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    tid = json.loads(sh(vm_system, "--server-url", served, "--json", "template", "create", "tty").stdout)[
        "id"
    ]
    sh(vm_system, "--server-url", served, "template", "update", tid, "--wall-ms", "0", "--cpu-ms", "0")
    sid = sh_session(vm_system, served, tid, worktree)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")},
        "HOME": str(tmp_path),
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    child = pexpect.spawn(
        str(vm_system), ["--server-url", served, "repl", sid], env=env, encoding="utf-8", timeout=60
    )
    try:
        child.expect_exact("> ")
        child.sendline("[1,")  # incomplete: a continuation prompt
        child.expect_exact("... ")
        child.sendline("2]")
        child.expect_exact("=> [ 1, 2 ]")
        child.expect_exact("> ")
        child.send("half typed")
        child.expect_exact("half typed")
        # Pace like a person: a ^C that lands in the instant before readline starts waiting
        # is recorded by CPython but only acted on at the next key (a terminal race, not ours).
        time.sleep(0.3)
        child.sendintr()  # Ctrl+C at the prompt clears the line
        child.expect_exact("> ")
        child.sendline('console.warn("spinning"); while (true) {}')
        child.expect_exact("[warn] spinning")
        child.sendintr()  # Ctrl+C while running cancels the execution
        child.expect_exact("status: cancelled")
        child.expect_exact("> ")
        child.sendline("1 + 1")
        child.expect_exact("=> 2")
        child.expect_exact("> ")
        child.sendeof()  # Ctrl+D exits
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    history = (tmp_path / ".vm-system" / "history").read_text()
    assert "1 + 1" in history and "half typed" not in history
