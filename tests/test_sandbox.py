"""Kernel confinement of session workers (API.md §13): Landlock, no_new_privs, no capabilities.

Real workers throughout. Through the API, JavaScript's `fs` and `database` cannot reach a host
file, the server's store or a symlink's target outside the worktree. A real worker whose module
checks have been removed (the injected fault) shows that the kernel alone refuses the same
reaches; the same worker without confinement shows the fault is real.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.runtime import sandbox
from tests.conftest import get_json, stored_events

ROOT = Path(__file__).resolve().parent.parent
LANDLOCK = sandbox.landlock_abi() > 0

pytestmark = pytest.mark.skipif(
    not LANDLOCK and not os.environ.get("CI"), reason="this kernel has no Landlock"
)


def run_script(script: str, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


async def fs_db_session(client: Any, api: Any) -> str:
    tpl = await api.template()
    for name in ("fs", "database"):
        r = await client.post(f"/api/v1/templates/{tpl['id']}/modules", json={"name": name})
        assert r.status == 201
    return (await api.session(tpl["id"]))["id"]


async def js_error(api: Any, session_id: str, code: str) -> str:
    status, body = await api.repl(session_id, code)
    assert status == 201 and body["status"] == "error", body
    return str(body["error"]["message"])


# ---------------------------------------------------------------- through the API


async def test_summary_reports_the_sandbox(client):
    summary = await get_json(client, "/api/v1/runtime/summary")
    assert summary["sandbox"] == {"landlock": LANDLOCK, "exec": "off"}


def thread_statuses(pid: int) -> list[dict[str, str]]:
    """/proc/PID/task/*/status of every thread, as dicts."""
    result = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        result.append(dict(line.split(":\t", 1) for line in text.splitlines()))
    return result


async def test_every_worker_thread_holds_no_privilege(client, api):
    session = await api.session()
    pid = session["runtime_meta"]["worker_pid"]
    for _ in range(500):  # the reader thread starts right after the worker reported ready
        statuses = thread_statuses(pid)
        if len(statuses) >= 2:
            break
        await asyncio.sleep(0.01)
    assert len(statuses) >= 2  # the main thread and the reader thread
    for status in statuses:
        assert status["NoNewPrivs"].strip() == "1", status
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[cap], 16) == 0, (cap, status)


async def test_js_reaches_nothing_outside_its_worktree(client, api, worktree, tmp_path, settings):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (worktree / "link.txt").symlink_to(secret)
    (worktree / "link.db").symlink_to(tmp_path / "vm.db")
    sid = await fs_db_session(client, api)
    _, first = await api.repl(sid, "'stored before the attempts'")
    store = settings.db_url.removeprefix("sqlite:///")

    fs = "const fs = require('fs'); "
    db = "const db = require('database'); "
    assert "EACCES" in await js_error(api, sid, fs + "fs.readFileSync('/etc/passwd', 'utf8')")
    assert "EACCES" in await js_error(api, sid, fs + "fs.readFileSync('../secret.txt', 'utf8')")
    assert "EACCES" in await js_error(api, sid, fs + "fs.readFileSync('link.txt', 'utf8')")
    assert "EACCES" in await js_error(api, sid, fs + "fs.writeFileSync('link.txt', 'overwritten')")
    assert "EACCES" in await js_error(api, sid, fs + "fs.writeFileSync('../evil.txt', 'x')")
    assert "EACCES" in await js_error(api, sid, db + "db.configure('link.db')")
    assert "EACCES" in await js_error(api, sid, db + f"db.configure('sqlite3', 'file:{store}')")
    message = await js_error(
        api, sid, db + f"db.configure(':memory:'); db.exec(\"ATTACH DATABASE '{store}' AS store\")"
    )
    assert "ATTACH" in message and "not allowed" in message
    message = await js_error(
        api, sid, db + f"db.configure('local.db'); db.exec(\"VACUUM INTO '{tmp_path / 'copy.db'}'\")"
    )
    assert "VACUUM INTO" in message

    # The worktree itself works, and nothing outside changed.
    code = (
        fs
        + "fs.writeFileSync('note.txt', 'kept'); "
        + db
        + (
            "db.configure('sqlite3', 'app.db'); db.exec('CREATE TABLE t (x)'); "
            "db.exec('INSERT INTO t VALUES (?)', fs.readFileSync('note.txt', 'utf8')); "
            "db.query('SELECT x FROM t')[0].x"
        )
    )
    assert (await api.value(sid, code))["json"] == "kept"
    assert secret.read_text() == "host secret"
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "copy.db").exists()
    assert (await stored_events(client, first["id"]))[-1]["payload"]["json"] == "stored before the attempts"


# ---------------------------------------------------------------- the kernel alone

WORKER = """
import json, os, socket, sys
from server.runtime import modules, protocol, sandbox
from server.runtime.engine import JsEngine
from server.runtime.worker import worker_main

cfg = json.loads(sys.argv[1])
# The injected fault: the modules' own path checks are gone, so only the kernel is left.
modules.ModuleHost._resolve = lambda self, raw, what: os.path.join(self._root, raw)
modules.open_beneath = lambda fd, path, flags, mode=0o666: os.open(path, flags, mode, dir_fd=fd)
if not cfg.pop("confine"):
    sandbox.confine = lambda *args, **kwargs: None
snippets = cfg.pop("snippets")
cfg["checkpoints"] = False
mine, theirs = socket.socketpair()
ctl_mine, ctl_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
if os.fork() == 0:
    mine.close()
    ctl_mine.close()
    try:
        worker_main(theirs.fileno(), ctl_theirs.fileno(), JsEngine())
    finally:
        os._exit(0)
theirs.close()
ctl_theirs.close()
mine.sendall(protocol.encode(protocol.Init(cfg)))
assert isinstance(protocol.recv_blocking(mine), protocol.Ready)
results = []
for i, source in enumerate(snippets):
    spec = protocol.Run(f"e{i}", "repl", source, "<repl>", {"wall_ms": 20000})
    mine.sendall(protocol.encode(spec))
    while not isinstance(msg := protocol.recv_blocking(mine), protocol.Done):
        pass
    kind, payload = msg.outcome
    results.append(payload.get("json") if kind == "value" else "threw: " + payload["message"])
print(json.dumps(results))
"""


def unchecked_worker(worktree: Path, snippets: list[str], *, confine: bool) -> list[str]:
    cfg = {
        "worktree": str(worktree),
        "modules": {"fs": ["readFileSync", "writeFileSync", "existsSync", "readdirSync"], "database": []},
        "strict": False,
        "esm": False,
        "mem_mb": 0,
        "libraries": [],
        "read_only": [],
        "confine": confine,
        "snippets": snippets,
    }
    cfg["modules"]["database"] = ["configure", "query", "exec", "close"]
    return list(run_script(WORKER, json.dumps(cfg)))


def test_the_kernel_alone_keeps_a_worker_in_its_worktree(worktree: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("host secret")
    (worktree / "link.txt").symlink_to(tmp_path / "secret.txt")
    store = tmp_path / "vm.db"  # stands for the server's own store, beside the worktree
    store.write_bytes(b"SQLite format 3\x00")
    snippets = [
        "require('fs').readFileSync('/etc/passwd', 'utf8').split(':')[0]",
        f"require('fs').readFileSync('{tmp_path}/secret.txt', 'utf8')",
        "require('fs').readFileSync('link.txt', 'utf8')",
        f"require('fs').writeFileSync('{tmp_path}/evil.txt', 'x'); 'written'",
        f"require('fs').readFileSync('{store}', 'utf8').slice(0, 6)",
        f"const db = require('database'); db.configure('{tmp_path}/new.db'); "
        "db.exec('CREATE TABLE t (x)'); 'created'",
        "require('fs').writeFileSync('in.txt', 'ok'); require('fs').readFileSync('in.txt', 'utf8')",
        "const d = require('database'); d.configure('in.db'); d.exec('CREATE TABLE t (x)'); "
        "d.exec('INSERT INTO t VALUES (1)'); d.query('SELECT x FROM t')[0].x",
    ]
    confined = unchecked_worker(worktree, snippets, confine=True)
    for result in confined[:5]:
        assert result.startswith("threw: ") and "EACCES" in result, confined
    assert confined[5].startswith("threw: ") and "unable to open" in confined[5], confined
    assert confined[6:] == ["ok", 1]
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "new.db").exists()

    # The same fault without confinement: each of those reaches really happens.
    open_worker = unchecked_worker(worktree, snippets[:6], confine=False)
    assert open_worker == ["root", "host secret", "host secret", "written", "SQLite", "created"]


NARROW = """
import json, os, sys
from server.runtime import sandbox

wt = sys.argv[1]
sandbox.confine(wt)
def attempt(fn):
    try:
        return fn()
    except PermissionError:
        return "EACCES"
    except ValueError as exc:
        return "ValueError: " + str(exc)

def read(path):
    with open(path) as fh:
        return fh.read()

def write(path):
    with open(path, "w") as fh:
        fh.write("x")
    return "written"

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    out = {"outside_narrow": attempt(lambda: sandbox.narrow("/tmp"))}
    sandbox.narrow(os.path.join(wt, "sub"))
    out.update(
        top=attempt(lambda: read(os.path.join(wt, "top.txt"))),
        sub=attempt(lambda: read(os.path.join(wt, "sub", "in.txt"))),
        write_sub=attempt(lambda: write(os.path.join(wt, "sub", "new.txt"))),
        write_top=attempt(lambda: write(os.path.join(wt, "new.txt"))),
        runtime=attempt(lambda: len(read(os.__file__)) > 0),
        worktree=sandbox.current().worktree,
    )
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(r, 65536))
print(json.dumps({"child": child, "parent_top": attempt(lambda: read(os.path.join(wt, "top.txt")))}))
"""


def test_a_fork_narrows_to_a_subdirectory(worktree: Path) -> None:
    (worktree / "top.txt").write_text("top")
    (worktree / "sub").mkdir()
    (worktree / "sub" / "in.txt").write_text("in")
    result = run_script(NARROW, str(worktree))
    child = result["child"]
    assert child["outside_narrow"].startswith("ValueError: narrow(): '/tmp' is not inside the worktree")
    assert (child["top"], child["sub"]) == ("EACCES", "in")
    assert (child["write_sub"], child["write_top"]) == ("written", "EACCES")
    assert child["runtime"] is True  # the Python runtime stays readable
    assert child["worktree"] == str(worktree.resolve() / "sub")
    assert result["parent_top"] == "top"  # the parent keeps its whole worktree
    assert (worktree / "sub" / "new.txt").exists() and not (worktree / "new.txt").exists()
