"""`exec` in bubblewrap (API.md §13), through the API with real boxes: what a program sees and
may do, that its CPU counts, and that no process outlives the execution, a cancel, a limit, a
session close or a killed server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.config import Settings
from tests.conftest import Api, free_port, get_json, session_body

VM_SYSTEM = str(Path(sys.executable).parent / "vm-system")
EXEC_ALLOWED = ("fs", "database", "exec")


@pytest.fixture
async def exec_api(aiohttp_client: Any, settings: Settings, worktree: Path) -> Api:
    client = await aiohttp_client(create_app(dataclasses.replace(settings, allow_modules=EXEC_ALLOWED)))
    return Api(client, worktree)


async def exec_session(api: Api, **limits: Any) -> str:
    tpl = await api.template(limits=limits) if limits else await api.template()
    r = await api.client.post(f"/api/v1/templates/{tpl['id']}/modules", json={"name": "exec"})
    assert r.status == 201, await r.text()
    return str((await api.session(tpl["id"]))["id"])


def run_js(cmd: str, *args: str) -> str:
    return f"require('exec').run({json.dumps(cmd)}, {json.dumps(list(args))})"


async def run_ok(api: Api, sid: str, cmd: str, *args: str) -> str:
    return str((await api.value(sid, run_js(cmd, *args)))["json"])


async def run_error(api: Api, sid: str, cmd: str, *args: str) -> dict[str, Any]:
    status, body = await api.repl(sid, run_js(cmd, *args))
    assert status == 201 and body["status"] == "error", body
    return body


def processes(*argv: str) -> list[int]:
    """Host pids whose command line is exactly ``argv``."""
    wanted = [a.encode() for a in argv]
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read().split(b"\0")[:-1] == wanted:
                        found.append(int(entry))
            except OSError:
                continue
    return found


async def until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    end = time.monotonic() + within
    while not condition():
        assert time.monotonic() < end, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


def host_passwd() -> str:
    return Path("/etc/passwd").read_text()


def start_server(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [VM_SYSTEM, "serve", "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "s.db")]
        + ["--cache-dir", str(tmp_path / "c"), "--allow-modules", "fs,exec"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------- what a program sees


async def test_summary_reports_bubblewrap(exec_api):
    assert (await get_json(exec_api.client, "/api/v1/runtime/summary"))["sandbox"]["exec"] == "bubblewrap"


async def test_the_box_shows_its_own_passwd_and_no_host_directories(exec_api, worktree):
    sid = await exec_session(exec_api)
    passwd = await run_ok(exec_api, sid, "cat", "/etc/passwd")
    assert passwd.splitlines()[0] == f"root:x:0:0:root:{worktree.resolve()}:/bin/sh"
    assert passwd != host_passwd() and len(passwd.splitlines()) == 2
    top = set((await run_ok(exec_api, sid, "ls", "/")).split())
    assert top <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "sbin", "usr", "tmp"}, top
    assert "proc" not in top and "home" not in top and "root" not in top
    assert (await run_ok(exec_api, sid, "pwd")).strip() == str(worktree.resolve())


async def test_the_environment_is_minimal(exec_api, worktree, monkeypatch):
    sid = await exec_session(exec_api)
    env = dict(line.split("=", 1) for line in (await run_ok(exec_api, sid, "env")).splitlines())
    home = str(worktree.resolve())
    assert env == {"PATH": env["PATH"], "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "PWD": home}
    assert "VM_SYSTEM" not in str(env)


async def test_the_worktree_is_the_only_writable_path(exec_api, worktree, tmp_path):
    sid = await exec_session(exec_api)
    assert await run_ok(exec_api, sid, "sh", "-c", "echo made > made.txt && cat made.txt") == "made\n"
    assert (worktree / "made.txt").read_text() == "made\n"
    for target in (tmp_path / "evil.txt", Path("/tmp") / f"evil-{tmp_path.name}", Path("/usr/evil")):
        body = await run_error(exec_api, sid, "sh", "-c", f"echo x > {target}")
        assert "exited with status" in body["error"]["message"], body
        assert (
            "Read-only file system" in body["error"]["message"] or "No such file" in body["error"]["message"]
        )
        assert not target.exists()


async def test_no_network_and_no_way_to_the_servers_api(exec_api):
    sid = await exec_session(exec_api)
    port = exec_api.client.port
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the control: from the host the server's port answers
    body = await run_error(exec_api, sid, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}")
    assert "exited with status 1" in body["error"]["message"], body
    assert "Network is unreachable" in body["error"]["message"] or "refused" in body["error"]["message"]


async def test_a_program_is_run_directly_and_missing_ones_are_named(exec_api):
    sid = await exec_session(exec_api)
    assert await run_ok(exec_api, sid, "echo", "$HOME; id") == "$HOME; id\n"
    body = await run_error(exec_api, sid, "no-such-program-xyz")
    assert "command not found: 'no-such-program-xyz'" in body["error"]["message"]


# ---------------------------------------------------------------- CPU and lifetimes


async def test_children_cpu_counts_against_cpu_ms(exec_api):
    sid = await exec_session(exec_api, cpu_ms=800, wall_ms=60000)
    script = "(while :; do :; done) & (while :; do :; done) & wait"
    status, body = await exec_api.repl(sid, run_js("sh", "-c", script, "cpu-marker-1"))
    assert status == 201 and body["status"] == "timeout", (body["error"], body["events"])
    assert body["error"]["code"] == "CPU_LIMIT_EXCEEDED"
    assert body["metrics"]["cpu_ms"] >= 800
    await until(lambda: not processes("sh", "-c", script, "cpu-marker-1"), "the spinners are gone")


async def test_a_backgrounded_child_is_gone_after_the_execution(exec_api):
    sid = await exec_session(exec_api)
    assert await run_ok(exec_api, sid, "sh", "-c", "sleep 977.25 & echo started") == "started\n"
    await until(lambda: not processes("sleep", "977.25"), "the backgrounded sleep is gone", within=10)


async def start_sleep(api: Api, sid: str, seconds: str) -> str:
    r = await api.client.post(
        "/api/v1/executions/repl", json={"session_id": sid, "input": run_js("sleep", seconds), "wait": False}
    )
    assert r.status == 202, await r.text()
    await until(lambda: bool(processes("sleep", seconds)), "the sleep runs in its box")
    return str((await r.json())["id"])


async def test_cancel_kills_the_box_and_the_session_goes_on(exec_api):
    sid = await exec_session(exec_api, wall_ms=600000)
    eid = await start_sleep(exec_api, sid, "988.25")
    r = await exec_api.client.post(f"/api/v1/executions/{eid}/cancel")
    assert r.status == 200 and (await r.json())["status"] == "cancelled"
    await until(lambda: not processes("sleep", "988.25"), "the cancelled sleep is gone")
    assert (await exec_api.value(sid, "1 + 1"))["json"] == 2


async def test_the_wall_limit_kills_the_box(exec_api):
    sid = await exec_session(exec_api, wall_ms=1500)
    status, body = await exec_api.repl(sid, run_js("sleep", "989.25"))
    assert status == 201 and body["status"] == "timeout", (body["error"], body["events"])
    assert body["error"]["code"] == "WALL_LIMIT_EXCEEDED"
    await until(lambda: not processes("sleep", "989.25"), "the sleep is gone")


async def test_closing_the_session_kills_the_box(exec_api):
    sid = await exec_session(exec_api, wall_ms=600000)
    await start_sleep(exec_api, sid, "990.25")
    assert (await exec_api.client.delete(f"/api/v1/sessions/{sid}")).status == 200
    await until(lambda: not processes("sleep", "990.25"), "the sleep of the closed session is gone")


def http(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=30) as resp:
        return json.loads(resp.read() or b"null")


async def test_no_box_survives_a_killed_server(tmp_path, worktree):
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1"
    server = start_server(tmp_path, port)
    try:
        for _ in range(600):
            try:
                http(f"{url}/health")
                break
            except OSError:
                await asyncio.sleep(0.05)
        tpl = http(f"{url}/templates", "POST", {"name": "killed"})
        http(f"{url}/templates/{tpl['id']}/modules", "POST", {"name": "exec"})
        http(f"{url}/templates/{tpl['id']}", "PATCH", {"settings": {"limits": {"wall_ms": 600000}}})
        sid = http(f"{url}/sessions", "POST", session_body(tpl["id"], worktree))["id"]
        body = {"session_id": sid, "input": run_js("sleep", "991.25"), "wait": False}
        http(f"{url}/executions/repl", "POST", body)
        await until(lambda: bool(processes("sleep", "991.25")), "the sleep runs in its box")
        server.send_signal(signal.SIGKILL)
        server.wait()
        await until(lambda: not processes("sleep", "991.25"), "the sleep is gone with the server")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
