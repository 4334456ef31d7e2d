"""The `vm-system` CLI against real servers: errors, the library cache, every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import is_incomplete
from tests.cli.support import (
    LiveServer,
    StaticHttp,
    api,
    api_json,
    make_session,
    make_settings,
    npm_registry_routes,
    run,
)
from tests.conftest import free_port

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
