"""The `vm-system` CLI and the client it uses, against real servers (in-process and subprocess)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from server.app import create_app
from server.cli import cli, is_incomplete
from server.client import ApiError, VmClient
from server.config import Settings
from tests.conftest import free_port, stop_process

VM_SYSTEM = Path(sys.executable).parent / "vm-system"
CLEAN_ENV = {"VM_SYSTEM_URL": None, "VM_SYSTEM_TOKEN": None, "VM_SYSTEM_CACHE_DIR": None}


# -- fixtures -------------------------------------------------------------------------------


class LiveServer:
    """A real server (`create_app`) on a free port, run by its own loop in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = TestServer(create_app(self.settings), host="127.0.0.1")
        try:
            self._loop.run_until_complete(server.start_server())
            self.url = str(server.make_url("")).rstrip("/")
        except BaseException as exc:  # report it to the test instead of hanging
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(server.close())
        self._loop.close()

    def __enter__(self) -> LiveServer:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings.from_env(
        {}, db_url=str(tmp_path / "vm.db"), cache_dir=str(tmp_path / "cache"), **overrides
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(make_settings(tmp_path)) as live:
        yield live


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    wt = tmp_path / "worktree"
    wt.mkdir()
    (wt / "script.js").write_text(
        'console.warn("args", __ARGS__.n); console.log("env", __ENV__.WHO); __ARGS__.n * 2\n'
    )
    return wt


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    runner = CliRunner(env={**CLEAN_ENV, **(env or {})})
    return runner.invoke(cli, list(args), catch_exceptions=False)


def api(server: LiveServer, *args: str) -> Result:
    return run("--server-url", server.url, *args)


def api_json(server: LiveServer, *args: str) -> Any:
    result = run("--server-url", server.url, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def make_session(server: LiveServer, worktree: Path, **limits: int) -> str:
    template = api_json(server, "template", "create", f"t-{time.monotonic_ns()}")
    if limits:
        api_json(server, "template", "update", template["id"], "--limits", json.dumps(limits))
    session = api_json(
        server,
        "session",
        "create",
        "--template-id",
        template["id"],
        "--workspace-id",
        "ws-1",
        "--base-commit",
        "abc123",
        "--worktree-path",
        str(worktree),
    )
    return str(session["id"])


async def open_session(client: VmClient, worktree: Path) -> str:
    template = await client.create_template(f"t-{time.monotonic_ns()}")
    session = await client.create_session(
        template_id=template["id"],
        workspace_id="ws-1",
        base_commit_oid="abc123",
        worktree_path=str(worktree),
    )
    return str(session["id"])


class StaticHttp:
    """A plain HTTP server answering fixed paths: an npm registry, or 'not vm-system'."""

    def __init__(self, routes: dict[str, tuple[int, str, bytes]]) -> None:
        self.routes = routes
        routes_ = routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, ctype, body = routes_.get(self.path, (404, "text/html", b"<h1>nope</h1>"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> StaticHttp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()


def npm_registry_routes(base_url: str, source: bytes) -> dict[str, tuple[int, str, bytes]]:
    """Metadata and tarball of lodash-4.17.21 holding `source` as its browser build."""
    import base64
    import hashlib

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        member = tarfile.TarInfo("package/lodash.min.js")
        member.size = len(source)
        archive.addfile(member, io.BytesIO(source))
    tarball = buffer.getvalue()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    meta = {
        "name": "lodash",
        "version": "4.17.21",
        "dist": {"tarball": f"{base_url}/lodash.tgz", "integrity": integrity},
    }
    return {
        "/lodash/4.17.21": (200, "application/json", json.dumps(meta).encode()),
        "/lodash.tgz": (200, "application/octet-stream", tarball),
    }


# -- errors without a server ----------------------------------------------------------------


def test_unreachable_server_prints_one_error_line_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("--server-url", url, "template", "list")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: UNREACHABLE: cannot reach the server at {url}: ")
    assert result.stderr.count("\n") == 1


def test_server_url_comes_from_the_environment() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("ops", "health", env={"VM_SYSTEM_URL": url})
    assert result.exit_code == 1
    assert f"cannot reach the server at {url}" in result.stderr


def test_a_server_that_is_not_vm_system_is_reported_by_http_status() -> None:
    with StaticHttp({}) as other:
        result = run("--server-url", other.url, "session", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: api error (status=404): the server answered HTTP 404: <h1>nope</h1>"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["template", "update", "some-id"],  # nothing to update
        ["template", "update", "some-id", "--limits", "[1]"],  # not an object
        ["template", "update", "some-id", "--cpu-ms", "-1"],
        ["exec", "run-file", "sid", "a.js", "--args", "{bad json"],
        ["exec", "run-file", "sid", "a.js", "--env", "NOEQUALS"],
        ["session", "create", "--template-id", "x"],  # missing required options
        ["template", "add-startup", "tid", "a.js", "--mode", "module"],  # only eval exists
        ["template", "add-capability", "tid", "--name", "x", "--config", "[1]"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2_before_any_request(args: list[str]) -> None:
    # The URL points nowhere: a usage error must be reported before trying to connect.
    result = run("--server-url", f"http://127.0.0.1:{free_port()}", *args)
    assert result.exit_code == 2
    assert "UNREACHABLE" not in result.output


def test_serve_reports_a_bad_setting_as_config_error() -> None:
    result = run("serve", "--listen", "no-port-here")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: CONFIG: listen address must look like HOST:PORT")


def test_serve_reports_a_bad_environment_variable_as_config_error() -> None:
    result = run("serve", env={"VM_SYSTEM_MAX_SESSIONS": "many"})
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: CONFIG: VM_SYSTEM_MAX_SESSIONS has an invalid value")


@pytest.mark.parametrize(
    ("source", "incomplete"),
    [
        ("1 + 1", False),
        ("function f() {", True),
        ("[1,\n2", True),
        ("[1,\n2]", False),
        ("x +", True),
        ("a ? b :", True),
        ("obj.", True),
        ("i++", False),
        ("'a { b'", False),  # brackets inside strings do not count
        ("`a ${1 +", True),
        ("`line one\nline two`", False),
        ("/* open comment", True),
        ("x // trailing comment with {", False),
        ("'abc'.match(/[(]/)", False),  # brackets inside a regex do not count
        ("foo)", False),  # unbalanced closer: let the server report the syntax error
    ],
)
def test_multi_line_input_detection(source: str, incomplete: bool) -> None:
    assert is_incomplete(source) is incomplete


# -- libs (local cache, no server) ------------------------------------------------------------


def test_libs_download_then_list_and_cache_info(tmp_path: Path) -> None:
    cache = tmp_path / "libcache"
    source = b"var _ = { VERSION: 'fake' };"
    with StaticHttp({}) as registry:
        registry.routes.update(npm_registry_routes(registry.url, source))
        result = run(
            "libs", "download", "lodash-4.17.21", "--cache-dir", str(cache), "--registry", registry.url
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            f"Downloading libraries to: {cache}",
            "",
            "Cache info:",
            f"  lodash-4.17.21: {len(source)} bytes ({cache / 'lodash-4.17.21.js'})",
        ]
        again = run(
            "--json",
            "libs",
            "download",
            "lodash-4.17.21",
            "--registry",
            registry.url,
            env={"VM_SYSTEM_CACHE_DIR": str(cache)},
        )
    assert (cache / "lodash-4.17.21.js").read_bytes() == source
    assert [r["status"] for r in json.loads(again.stdout)] == ["cached"]

    listed = run("--json", "libs", "list", "--cache-dir", str(cache))
    cached = {lib["name"]: lib["cached"] for lib in json.loads(listed.stdout)}
    assert cached["lodash-4.17.21"] is True
    assert cached["dayjs-1.11.13"] is False

    (cache / "notes.js").write_text("not a catalog file")  # only <id>-<version>.js counts
    info = run("libs", "cache-info", "--cache-dir", str(cache))
    assert info.exit_code == 0
    lines = info.stdout.splitlines()
    assert lines[:4] == [
        "Cached libraries (1):",
        "",
        "  lodash-4.17.21",
        f"    Path: {cache / 'lodash-4.17.21.js'}",
    ]
    assert lines[4] == f"    Size: {len(source)} bytes"
    assert lines[-1] == f"Total cache size: {len(source)} bytes ({len(source) / 1024:.2f} KB)"
    assert "notes.js" not in info.stdout


def test_libs_download_failure_is_an_error_line(tmp_path: Path) -> None:
    with StaticHttp({}) as registry:  # knows no package: every lookup is a 404
        result = run(
            "libs",
            "download",
            "lodash-4.17.21",
            "--cache-dir",
            str(tmp_path),
            "--registry",
            registry.url,
        )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: DOWNLOAD_FAILED: lodash-4.17.21: ")
    assert "HTTP 404" in result.stderr
    assert not list(tmp_path.glob("*.js"))


def test_libs_download_rejects_unknown_names(tmp_path: Path) -> None:
    result = run("libs", "download", "leftpad-1.0.0", "--cache-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: LIBRARY_NOT_ALLOWED: not in the library catalog: leftpad-1.0.0")


def test_libs_cache_info_of_an_empty_cache(tmp_path: Path) -> None:
    result = run("libs", "cache-info", "--cache-dir", str(tmp_path / "missing"))
    assert result.exit_code == 0
    assert result.stdout == "No libraries cached. Run 'vm-system libs download' first.\n"
    assert (
        json.loads(run("--json", "libs", "cache-info", "--cache-dir", str(tmp_path / "missing")).stdout)[
            "exists"
        ]
        is False
    )


# -- templates, sessions, executions against a real server ------------------------------------


def test_health_and_runtime_summary(server: LiveServer) -> None:
    assert api_json(server, "ops", "health") == {"status": "ok"}
    result = api(server, "ops", "runtime-summary")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["active_sessions"] == 0 and summary["engine"] == "quickjs"
    assert result.stdout.startswith('{\n  "')  # 2-space indented, as the original printed it


def test_json_works_before_or_after_the_command(server: LiveServer) -> None:
    after = api(server, "ops", "runtime-summary", "--json")
    assert after.exit_code == 0
    summary = json.loads(after.stdout)
    assert summary["engine"] == "quickjs" and summary["active_session_ids"] == []
    nested = api(server, "template", "list", "--json")
    assert nested.exit_code == 0 and json.loads(nested.stdout) == []


def test_empty_lists_say_so(server: LiveServer) -> None:
    for args, said in (
        (["template", "list"], "No templates found"),
        (["session", "list"], "No sessions found"),
    ):
        result = api(server, *args)
        assert result.exit_code == 0
        assert result.stdout == said + "\n"
    assert api_json(server, "session", "list") == []


def test_template_lifecycle(server: LiveServer) -> None:
    created = api(server, "template", "create", "demo")
    assert created.exit_code == 0
    tid = api_json(server, "template", "list")[0]["id"]
    assert created.stdout == f"Created template: demo (ID: {tid})\n"

    listed = api(server, "template", "list")
    assert listed.stdout.splitlines()[2].split() == [tid, "demo", "quickjs", "yes"]
    assert listed.stdout.splitlines()[0].split() == ["ID", "Name", "Engine", "Active"]

    updated = api(
        server,
        "template",
        "update",
        tid,
        "--name",
        "demo2",
        "--limits",
        '{"wall_ms": 9000, "cpu_ms": 100}',
        "--cpu-ms",
        "1500",
        "--runtime",
        '{"strict": true}',
    )
    assert updated.exit_code == 0, updated.output
    detail = api_json(server, "template", "get", tid)
    assert detail["template"]["name"] == "demo2"
    assert detail["settings"]["limits"]["cpu_ms"] == 1500  # the flag wins over --limits
    assert detail["settings"]["limits"]["wall_ms"] == 9000
    assert detail["settings"]["runtime"]["strict"] is True

    assert api(server, "template", "add-module", tid, "fs").stdout == f"Added module: fs to template {tid}\n"
    assert api(server, "template", "list-modules", tid).stdout.split() == ["fs"]
    assert api(server, "template", "remove-module", tid, "fs").exit_code == 0
    assert api(server, "template", "list-modules", tid).stdout == "No modules configured\n"

    cap = api(
        server,
        "template",
        "add-capability",
        tid,
        "--kind",
        "env",
        "--name",
        "HOME",
        "--config",
        '{"value": 1}',
        "--disabled",
    )
    assert cap.exit_code == 0, cap.output
    caps = api_json(server, "template", "list-capabilities", tid)
    assert [(c["kind"], c["name"], c["enabled"], c["config"]) for c in caps] == [
        ("env", "HOME", False, {"value": 1})
    ]

    assert api(server, "template", "add-startup", tid, "./init.js", "--order", "5").exit_code == 0
    startup = api(server, "template", "list-startup", tid)
    assert startup.stdout.splitlines()[2].split() == ["5", "eval", "init.js"]

    shown = api(server, "template", "get", tid).stdout
    assert '"cpu_ms":1500' in shown and "  [disabled] env:HOME" in shown and "  [5] init.js" in shown

    deleted = api(server, "template", "delete", tid)
    assert deleted.stdout == f"Deleted template: {tid}\n"
    gone = api(server, "template", "get", tid)
    assert gone.exit_code == 1
    assert gone.stderr.startswith("Error: api error (status=404, code=TEMPLATE_NOT_FOUND): ")


def test_api_errors_print_code_and_message(server: LiveServer) -> None:
    api_json(server, "template", "create", "same")
    duplicate = api(server, "template", "create", "same")
    assert duplicate.exit_code == 1
    assert duplicate.stderr.startswith("Error: api error (status=409, code=CONFLICT): ")
    assert duplicate.stdout == ""

    bad_id = api(server, "session", "get", "not-a-uuid")
    assert bad_id.exit_code == 1
    assert bad_id.stderr == (
        "Error: api error (status=400, code=VALIDATION_ERROR): session_id must be a valid UUID\n"
    )

    engine = api(server, "template", "create", "x", "--engine", "v8")
    assert engine.stderr.startswith("Error: api error (status=422, code=ENGINE_UNSUPPORTED): ")


def test_ids_are_passed_through_as_given(server: LiveServer) -> None:
    tid = api_json(server, "template", "create", "upper")["id"]
    shown = api_json(server, "template", "get", tid.upper())
    assert shown["template"]["id"] == tid


def test_catalog_commands(server: LiveServer) -> None:
    modules = api(server, "template", "list-available-modules")
    assert modules.exit_code == 0
    for name in ("fs", "database", "exec"):
        assert name in modules.stdout
    libraries = api_json(server, "template", "list-available-libraries")
    assert "lodash-4.17.21" in [lib["name"] for lib in libraries]


def test_session_lifecycle(server: LiveServer, worktree: Path) -> None:
    sid = make_session(server, worktree)
    listed = api(server, "session", "list", "--status", "ready")
    assert sid in listed.stdout and "ready" in listed.stdout
    assert api_json(server, "session", "list", "--status", "closed") == []
    shown = api(server, "session", "get", sid)
    assert f"Worktree Path: {worktree}" in shown.stdout.splitlines()

    closed = api(server, "session", "close", sid)
    assert closed.exit_code == 0 and closed.stdout == f"Closed session: {sid}\n"
    assert api_json(server, "session", "get", sid)["status"] == "closed"
    assert api(server, "session", "close", sid).exit_code == 0  # idempotent

    refused = api(server, "exec", "repl", sid, "1")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: api error (status=409, code=SESSION_NOT_READY): ")


def test_exec_repl_prints_console_value_and_status(server: LiveServer, worktree: Path) -> None:
    sid = make_session(server, worktree)
    code = 'console.warn("careful"); console.log("hi"); [1, 2]'
    result = api(server, "exec", "repl", sid, code)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Execution ID: ") and lines[1] == "Status: ok"
    assert lines[2] == 'Result: {"type":"array","preview":"[ 1, 2 ]","json":[1,2]}'
    assert lines[3:] == [
        "",
        "Events:",
        f"[1] input_echo: {json.dumps({'text': code}, separators=(',', ':'))}",
        '[2] console: {"level":"warn","text":"careful"}',
        '[3] console: {"level":"log","text":"hi"}',
        '[4] value: {"type":"array","preview":"[ 1, 2 ]","json":[1,2]}',
    ]

    # State persists across executions.
    api(server, "exec", "repl", sid, "var x = 40")
    assert '"preview":"42"' in api(server, "exec", "repl", sid, "x + 2").stdout


def test_js_exception_is_not_a_cli_failure(server: LiveServer, worktree: Path) -> None:
    sid = make_session(server, worktree)
    result = api(server, "exec", "repl", sid, "missing + 1")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[1] == "Status: error"
    assert lines[2].startswith('Error: {"name":"ReferenceError","message":"ReferenceError: missing')
    assert lines[-1].startswith('[2] exception: {"name":"ReferenceError"')
    assert result.stderr == ""


def test_exec_run_file_with_args_and_env(server: LiveServer, worktree: Path) -> None:
    sid = make_session(server, worktree)
    result = api(
        server,
        "exec",
        "run-file",
        sid,
        "script.js",
        "--args",
        '{"n": 21}',
        "--env",
        "WHO=cli",
        "--env",
        "EMPTY=",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1:] == [
        "Status: ok",  # no Result: line for run-file: the value is among the events
        "",
        "Events:",
        '[1] console: {"level":"warn","text":"args 21"}',
        '[2] console: {"level":"log","text":"env cli"}',
        '[3] value: {"type":"number","preview":"42","json":42}',
    ]

    data = api_json(server, "exec", "run-file", sid, "script.js", "--args", '{"n": 1}')
    assert data["kind"] == "run_file" and data["path"] == "script.js"
    assert data["env"] == {}  # no --env sends the default

    escape = api(server, "exec", "run-file", sid, "../outside.js")
    assert escape.exit_code == 1
    assert escape.stderr.startswith("Error: api error (status=422, code=INVALID_PATH): ")
    missing = api(server, "exec", "run-file", sid, "nope.js")
    assert missing.stderr.startswith("Error: api error (status=404, code=FILE_NOT_FOUND): ")


def test_exec_list_get_events_and_cancel(server: LiveServer, worktree: Path) -> None:
    sid = make_session(server, worktree)
    execution = api_json(server, "exec", "repl", sid, 'console.log("one"); 7')
    eid = execution["id"]
    assert [e["type"] for e in execution["events"]] == ["input_echo", "console", "value"]

    listed = api(server, "exec", "list", sid, "--limit", "5")
    assert listed.stdout.splitlines()[2].split()[:3] == [eid, "repl", "ok"]

    shown = api(server, "exec", "get", eid).stdout.splitlines()
    assert "Status: ok" in shown
    assert 'Result: {"type":"number","preview":"7","json":7}' in shown

    events = api(server, "exec", "events", eid, "--after-seq", "1")
    assert events.exit_code == 0
    rows = events.stdout.splitlines()
    assert rows[0].split() == ["Seq", "Timestamp", "Type", "Payload"]
    assert rows[2].split()[0] == "2" and rows[2].endswith('{"level":"log","text":"one"}')
    assert rows[3].split()[0] == "3" and rows[3].endswith('{"type":"number","preview":"7","json":7}')
    assert [e["seq"] for e in api_json(server, "exec", "events", eid, "--limit", "1")] == [1]

    ended = api(server, "exec", "cancel", eid)
    assert ended.exit_code == 1
    assert ended.stderr.startswith("Error: api error (status=409, code=EXECUTION_NOT_RUNNING): ")


def test_exec_no_wait_then_follow(server: LiveServer, worktree: Path) -> None:
    sid = make_session(server, worktree)
    accepted = api_json(
        server,
        "exec",
        "repl",
        sid,
        'for (let i = 0; i < 3; i++) { console.log("tick", i);'
        " await new Promise(r => setTimeout(r, 20)); } 'done'",
        "--no-wait",
    )
    assert accepted["kind"] == "repl" and accepted["id"]
    followed = api(server, "exec", "events", accepted["id"], "--follow")
    assert followed.exit_code == 0, followed.output
    lines = followed.stdout.splitlines()
    # Log lines as Node prints them (the same as `vm-system repl`); strings quoted, as in the browser.
    assert lines[:4] == ["tick 0", "tick 1", "tick 2", "=> 'done'"]
    assert lines[4].startswith("status: ok")


def test_exec_follow_streams_and_prints_the_outcome(server: LiveServer, worktree: Path) -> None:
    sid = make_session(server, worktree)
    result = api(server, "exec", "repl", sid, 'console.error("bad"); throw new TypeError("no")', "--follow")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == ["[error] bad", "Uncaught TypeError: no"]
    assert "status: error" in result.stdout

    ndjson = api(server, "--json", "exec", "run-file", sid, "script.js", "--args", '{"n": 2}', "--follow")
    items = [json.loads(line) for line in ndjson.stdout.splitlines()]
    assert [i["seq"] for i in items[:-1]] == list(range(1, len(items)))
    assert items[-2]["type"] == "value" and items[-2]["payload"]["preview"] == "4"
    assert items[-1]["status"] == "ok" and "seq" not in items[-1]


def test_a_limit_is_shown_as_the_execution_status(server: LiveServer, worktree: Path) -> None:
    sid = make_session(server, worktree, wall_ms=200)
    result = api(server, "exec", "repl", sid, "await new Promise(() => {})")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == "Status: timeout"
    assert lines[2].startswith('Error: {"code":"WALL_LIMIT_EXCEEDED"')
    assert lines[-1].startswith('[2] system: {"level":"error"')

    followed = api(server, "exec", "repl", sid, "await new Promise(() => {})", "--follow")
    assert "status: timeout" in followed.stdout and "WALL_LIMIT_EXCEEDED" in followed.stdout


def test_token_is_sent_when_given(tmp_path: Path) -> None:
    with LiveServer(make_settings(tmp_path, token="s3cret")) as live:
        denied = run("--server-url", live.url, "template", "list")
        assert denied.exit_code == 1
        assert denied.stderr.startswith("Error: api error (status=401, code=UNAUTHORIZED): ")
        allowed = run("--server-url", live.url, "--token", "s3cret", "template", "list")
        assert allowed.exit_code == 0 and allowed.stdout == "No templates found\n"
        from_env = run("--server-url", live.url, "template", "list", env={"VM_SYSTEM_TOKEN": "s3cret"})
        assert from_env.exit_code == 0


# -- the client library -----------------------------------------------------------------------


async def test_client_raises_api_errors_with_status_code_and_details(
    server: LiveServer, worktree: Path
) -> None:
    async with VmClient(server.url) as client:
        sid = await open_session(client, worktree)
        with pytest.raises(ApiError) as missing:
            await client.get_session("00000000-0000-4000-8000-000000000000")
        assert (missing.value.status, missing.value.code) == (404, "SESSION_NOT_FOUND")

        running = await client.repl(sid, "await new Promise(r => setTimeout(r, 60000))", wait=False)
        try:
            with pytest.raises(ApiError) as busy:
                await client.repl(sid, "1")
            assert (busy.value.status, busy.value.code) == (409, "SESSION_BUSY")
            assert busy.value.details["running_execution_id"] == running["id"]
        finally:
            cancelled = await client.cancel_execution(running["id"])
        assert cancelled["status"] == "cancelled"


async def test_follow_execution_yields_events_then_the_record(server: LiveServer, worktree: Path) -> None:
    async with VmClient(server.url) as client:
        sid = await open_session(client, worktree)
        execution = await client.repl(sid, 'console.log("a"); console.log("b"); 3', wait=False)
        items = [item async for item in client.follow_execution(execution["id"])]
        assert [i.get("type") for i in items[:-1]] == ["input_echo", "console", "console", "value"]
        assert [i["seq"] for i in items[:-1]] == [1, 2, 3, 4]
        assert items[-1]["id"] == execution["id"] and items[-1]["status"] == "ok"

        resumed = [i async for i in client.follow_execution(execution["id"], after_seq=2)]
        assert [i.get("seq") for i in resumed] == [3, 4, None]


async def test_socket_requests_get_their_own_replies(server: LiveServer, worktree: Path) -> None:
    async with VmClient(server.url) as client:
        sid = await open_session(client, worktree)
        sock = await client.connect_ws()
        async with sock:
            pong = await sock.request({"type": "ping"})
            assert pong["type"] == "pong"
            with pytest.raises(ApiError) as unknown:
                await sock.request(
                    {"type": "subscribe", "execution_id": "00000000-0000-4000-8000-000000000000"}
                )
            assert unknown.value.code == "EXECUTION_NOT_FOUND"
            assert unknown.value.status == 404

            accepted = await sock.request({"type": "execute", "session_id": sid, "input": "6*7"})
            assert accepted["type"] == "accepted"
            items = [i async for i in sock.follow(accepted["subscription"])]
            value = [i for i in items if i.get("type") == "value"]
            assert value[0]["payload"]["preview"] == "42"
            assert items[-1]["status"] == "ok"


async def test_follow_execution_resumes_after_a_dropped_socket(
    server: LiveServer, worktree: Path, aiohttp_server: Any
) -> None:
    """Fault injection: a proxy drops the first WebSocket right after it relays some events."""
    connections: list[int] = []

    async def ws_proxy(request: web.Request) -> web.WebSocketResponse:
        connections.append(len(connections) + 1)
        first = len(connections) == 1
        downstream = web.WebSocketResponse()
        await downstream.prepare(request)
        async with aiohttp.ClientSession() as http, http.ws_connect(server.url + "/api/v1/ws") as upstream:

            async def forward_requests() -> None:
                async for msg in downstream:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await upstream.send_str(msg.data)

            pump = asyncio.ensure_future(forward_requests())
            async for msg in upstream:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                await downstream.send_str(msg.data)
                if first and json.loads(msg.data).get("type") == "events":
                    break  # the fault: the connection dies mid-stream
            pump.cancel()
        await downstream.close()
        return downstream

    async def rest_proxy(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as http,
            http.request(request.method, server.url + request.path_qs, data=await request.read()) as resp,
        ):
            return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/ws", ws_proxy)
    app.router.add_route("*", "/{tail:.*}", rest_proxy)
    proxy = await aiohttp_server(app)

    async with VmClient(str(proxy.make_url("")).rstrip("/")) as client:
        sid = await open_session(client, worktree)
        code = (
            "for (let i = 0; i < 5; i++) { console.log('line', i);"
            " await new Promise(r => setTimeout(r, 30)); } 'end'"
        )
        execution = await client.repl(sid, code, wait=False)
        items = [item async for item in client.follow_execution(execution["id"])]

    events, final = items[:-1], items[-1]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    texts = [e["payload"]["text"] for e in events if e["type"] == "console"]
    assert texts == [f"line {i}" for i in range(5)]
    assert events[-1]["type"] == "value" and events[-1]["payload"]["preview"] == "end"
    assert final["status"] == "ok"
    assert len(connections) >= 2  # it reconnected and resumed from its cursor


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
