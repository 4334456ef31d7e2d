"""Every form of UPSTREAM-CLI.md (the original's CLI) against a real server: the lines scripts parse.

Ids are taken from the output with the original scripts' own patterns; exit codes and stderr are
checked for errors. This file has section 3's template, session and exec forms;
test_cli_upstream_global.py has the global options, help, errors, ops and libs.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from server.client import VmClient
from server.runtime import libraries, modules
from tests.cli.support import LiveServer, run
from tests.conftest import free_port

TEMPLATE_ID = re.compile(r"Created template: .* \(ID: ([0-9a-f-]+)\)")
SESSION_ID = re.compile(r"Created session: ([0-9a-f-]+)")
EXECUTION_ID = re.compile(r"Execution ID: ([0-9a-f-]+)")
RFC3339 = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    wt = tmp_path / "worktree"
    wt.mkdir()
    (wt / "app.js").write_text('console.log("app", __ARGS__.n, __ENV__.WHO); __ARGS__.n * 2\n')
    return wt


def cli(server: LiveServer, *args: str) -> Result:
    return run("--server-url", server.url, *args)


def ok(server: LiveServer, *args: str) -> str:
    result = cli(server, *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


def as_json(server: LiveServer, *args: str) -> Any:
    return json.loads(ok(server, "--json", *args))


def new_template(server: LiveServer, name: str = "t", *more: str) -> str:
    match = TEMPLATE_ID.search(ok(server, "template", "create", "--name", name, *more))
    assert match
    return match.group(1)


def new_session(server: LiveServer, template_id: str, worktree: Path) -> str:
    out = ok(
        server,
        "session",
        "create",
        "--template-id",
        template_id,
        "--workspace-id",
        "ws",
        "--base-commit",
        "deadbeef",
        "--worktree-path",
        str(worktree),
    )
    match = SESSION_ID.search(out)
    assert match
    return match.group(1)


def row(*cells: Any, widths: tuple[int, ...]) -> str:
    return " ".join(f"{c!s:<{w}}" for c, w in zip(cells, widths, strict=True))


# -- 3 template ------------------------------------------------------------------------------------


def test_template_create_with_name_and_engine(server: LiveServer) -> None:
    out = ok(server, "template", "create", "--name", "SmokeTemplate", "--engine", "goja")
    match = TEMPLATE_ID.search(out)
    assert match and out == f"Created template: SmokeTemplate (ID: {match.group(1)})\n"
    assert as_json(server, "template", "get", match.group(1))["template"]["engine"] == "quickjs"
    assert "Engine: quickjs" in ok(server, "template", "get", new_template(server, "default-engine"))
    assert TEMPLATE_ID.search(ok(server, "template", "create", "positional"))  # this project's form
    assert cli(server, "template", "create", "a", "--name", "b").exit_code == 2
    assert cli(server, "template", "create").exit_code == 2


def test_template_list_columns(server: LiveServer) -> None:
    assert ok(server, "template", "list") == "No templates found\n"
    tid = new_template(server, "listed")
    assert ok(server, "template", "list").splitlines() == [
        row("ID", "Name", "Engine", "Active", widths=(36, 20, 10, 10)),
        "-" * 84,
        row(tid, "listed", "quickjs", "yes", widths=(36, 20, 10, 10)),
    ]


def test_template_get_lines(server: LiveServer) -> None:
    tid = new_template(server, "shown")
    ok(server, "template", "add-module", tid, "--name", "fs")
    ok(server, "template", "add-library", tid, "--name", "lodash-4.17.21")
    ok(server, "template", "add-capability", tid, "--name", "console", "--config", '{"a":1}')
    ok(server, "template", "add-startup", tid, "--path", "init.js")
    detail = as_json(server, "template", "get", tid)
    out = ok(server, "template", "get", tid)
    head = out.split("\n\n")[0].splitlines()
    assert head[:4] == ["Template: shown", f"ID: {tid}", "Engine: quickjs", "Active: true"]
    assert re.fullmatch(f"Created: {RFC3339}", head[4]) and re.fullmatch(f"Updated: {RFC3339}", head[5])
    compact = {k: json.dumps(v, separators=(",", ":")) for k, v in detail["settings"].items()}
    assert (
        f"\nSettings:\n  Limits: {compact['limits']}\n  Resolver: {compact['resolver']}\n"
        f"  Runtime: {compact['runtime']}\n" in out
    )
    assert '\nCapabilities:\n  [enabled] module:console (config: {"a":1})\n' in out
    assert "\nStartup Files:\n  [10] init.js (mode: eval)\n" in out
    assert out.endswith("\nExposed Modules:\n  - fs\n\nLoaded Libraries:\n  - lodash-4.17.21\n")


def test_template_delete(server: LiveServer) -> None:
    tid = new_template(server)
    assert ok(server, "template", "delete", tid) == f"Deleted template: {tid}\n"
    assert cli(server, "template", "get", tid).exit_code == 1


def test_template_add_capability_defaults_and_enabled(server: LiveServer) -> None:
    tid = new_template(server)
    out = ok(server, "template", "add-capability", tid, "--name", "console", "--enabled")
    assert out == f"Added capability: module:console to template {tid}\n"
    ok(server, "template", "add-capability", tid, "--kind", "env", "--name", "HOME", "--enabled=false")
    caps = as_json(server, "template", "list-capabilities", tid)
    assert [(c["kind"], c["name"], c["enabled"], c["config"]) for c in caps] == [
        ("module", "console", True, {}),
        ("env", "HOME", False, {}),
    ]
    for bad in ("nope", "[1]"):
        refused = cli(server, "template", "add-capability", tid, "--name", "x", "--config", bad)
        assert refused.exit_code == 2 and "invalid config JSON" in refused.stderr
    assert len(as_json(server, "template", "list-capabilities", tid)) == 2


def test_template_list_capabilities_columns(server: LiveServer) -> None:
    tid = new_template(server)
    assert ok(server, "template", "list-capabilities", tid) == "No capabilities found\n"
    config = {"path": "x" * 40}
    ok(server, "template", "add-capability", tid, "--name", "fs", "--config", json.dumps(config))
    raw = json.dumps(config, separators=(",", ":"))
    assert ok(server, "template", "list-capabilities", tid).splitlines() == [
        row("Kind", "Name", "Enabled", "Config", widths=(10, 20, 10, 30)),
        "-" * 80,
        row("module", "fs", "yes", raw[:27] + "...", widths=(10, 20, 10, 30)),
    ]


def test_template_add_startup_and_list_startup(server: LiveServer) -> None:
    tid = new_template(server)
    assert ok(server, "template", "list-startup", tid) == "No startup files found\n"
    out = ok(server, "template", "add-startup", tid, "--path", "runtime/init.js")
    assert out == f"Added startup file: runtime/init.js (order: 10) to template {tid}\n"
    ok(server, "template", "add-startup", tid, "--path", "boot.js", "--order", "20", "--mode", "EVAL")
    refused = cli(server, "template", "add-startup", tid, "--path", "x.js", "--mode", "module")
    assert refused.exit_code == 2
    assert 'unsupported startup mode "module": only eval is currently supported' in refused.stderr
    assert ok(server, "template", "list-startup", tid).splitlines() == [
        row("Order", "Mode", "Path", widths=(5, 10, 50)),
        "-" * 70,
        row(10, "eval", "runtime/init.js", widths=(5, 10, 50)),
        row(20, "eval", "boot.js", widths=(5, 10, 50)),
    ]


@pytest.mark.parametrize(
    ("noun", "plural", "name"), [("module", "modules", "fs"), ("library", "libraries", "lodash-4.17.21")]
)
def test_template_modules_and_libraries_by_name(
    server: LiveServer, noun: str, plural: str, name: str
) -> None:
    tid = new_template(server)
    assert ok(server, "template", f"list-{plural}", tid) == f"No {plural} configured\n"
    added = ok(server, "template", f"add-{noun}", tid, "--name", name)
    assert added == f"Added {noun}: {name} to template {tid}\n"
    assert ok(server, "template", f"list-{plural}", tid) == f"{name}\n"
    removed = ok(server, "template", f"remove-{noun}", tid, "--name", name)
    assert removed == f"Removed {noun}: {name} from template {tid}\n"
    assert ok(server, "template", f"list-{plural}", tid) == f"No {plural} configured\n"


def test_json_is_not_a_module(server: LiveServer) -> None:
    refused = cli(server, "template", "add-module", new_template(server), "--name", "json")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: api error (status=422, code=MODULE_NOT_ALLOWED): ")


def test_catalogs_print_without_a_server(server: LiveServer) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    mods = run("--server-url", nowhere, "template", "list-available-modules")
    assert mods.exit_code == 0 and mods.stdout == json.dumps(modules.catalog_json(), indent=2) + "\n"
    with urllib.request.urlopen(f"{server.url}/api/v1/modules") as resp:
        assert json.loads(mods.stdout) == json.loads(resp.read())
    libs = run("--server-url", nowhere, "template", "list-available-libraries")
    assert libs.exit_code == 0 and libs.stdout.startswith('[\n  {\n    "name": "lodash-4.17.21"')
    assert [lib["name"] for lib in json.loads(libs.stdout)] == [i.name for i in libraries.CATALOG]


# -- 3 session -------------------------------------------------------------------------------------


def test_session_create_lines(server: LiveServer, worktree: Path) -> None:
    tid = new_template(server)
    out = ok(
        server,
        "session",
        "create",
        "--template-id",
        tid,
        "--workspace-id",
        "ws-smoke",
        "--base-commit",
        "deadbeef",
        "--worktree-path",
        str(worktree),
    )
    sid = out.split()[2]
    assert out.splitlines() == [
        f"Created session: {sid}",
        "Status: ready",
        f"Template ID: {tid}",
        "Workspace ID: ws-smoke",
        "Base Commit: deadbeef",
        f"Worktree Path: {worktree}",
    ]


def test_session_list_get_and_close(server: LiveServer, worktree: Path) -> None:
    tid = new_template(server)
    sid = new_session(server, tid, worktree)
    listed = ok(server, "session", "list", "--status", "ready").splitlines()
    assert listed[0] == row("Session ID", "Template ID", "Status", "Created", widths=(36, 36, 10, 20))
    assert listed[1] == "-" * 102
    assert re.fullmatch(re.escape(f"{sid} {tid} ready      ") + RFC3339, listed[2])
    assert ok(server, "session", "list", "--status", "closed") == "No sessions found\n"

    shown = ok(server, "session", "get", sid).splitlines()
    assert shown[:6] == [
        f"Session ID: {sid}",
        f"Template ID: {tid}",
        "Workspace ID: ws",
        "Base Commit: deadbeef",
        f"Worktree Path: {worktree}",
        "Status: ready",
    ]
    assert re.fullmatch(f"Created: {RFC3339}", shown[6]) and len(shown) == 7

    assert ok(server, "session", "close", sid) == f"Closed session: {sid}\n"
    closed = ok(server, "session", "get", sid).splitlines()
    assert "Status: closed" in closed and re.fullmatch(f"Closed: {RFC3339}", closed[7])


def test_session_get_shows_the_last_error_of_a_crashed_session(server: LiveServer, worktree: Path) -> None:
    tid = new_template(server)
    ok(server, "template", "add-library", tid, "--name", "moment-2.30.1")  # not in the cache
    failed = cli(server, "session", "create", "--template-id", tid, "--workspace-id", "w",
                 "--base-commit", "c", "--worktree-path", str(worktree))  # fmt: skip
    assert failed.exit_code == 1
    assert failed.stderr.startswith(
        "Error: api error (status=422, code=LIBRARY_UNAVAILABLE): failed to load libraries: "
    )
    sid = ok(server, "session", "list", "--status", "crashed").splitlines()[2].split()[0]
    shown = ok(server, "session", "get", sid).splitlines()
    assert shown[-1].startswith("Last Error: failed to load libraries: library 'moment-2.30.1'")


# -- 3 exec ----------------------------------------------------------------------------------------


def test_exec_repl_lines(server: LiveServer, worktree: Path) -> None:
    sid = new_session(server, new_template(server), worktree)
    ok(server, "exec", "repl", sid, "var x = 40")
    out = ok(server, "exec", "repl", sid, "x + 2")
    match = EXECUTION_ID.search(out)
    assert match and '"preview":"42"' in out
    value = json.dumps(as_json(server, "exec", "get", match.group(1))["result"], separators=(",", ":"))
    assert out.splitlines() == [
        f"Execution ID: {match.group(1)}",
        "Status: ok",
        f"Result: {value}",
        "",
        "Events:",
        '[1] input_echo: {"text":"x + 2"}',
        f"[2] value: {value}",
    ]


def test_exec_run_file_with_json_args_and_env(server: LiveServer, worktree: Path) -> None:
    sid = new_session(server, new_template(server), worktree)
    out = ok(server, "exec", "run-file", sid, "app.js", "--args", '{"n": 21}', "--env", '{"WHO": "cli"}')
    assert EXECUTION_ID.search(out) and "Result:" not in out
    assert out.splitlines()[1:] == [
        "Status: ok",
        "",
        "Events:",
        '[1] console: {"level":"log","text":"app 21 cli"}',
        '[2] value: {"type":"number","preview":"42","json":42}',
    ]
    ran = as_json(server, "exec", "run-file", sid, "app.js")  # --args/--env default to {}
    assert (ran["args"], ran["env"]) == ({}, {})
    for flag in ("--args", "--env"):
        refused = cli(server, "exec", "run-file", sid, "app.js", flag, "{bad")
        assert refused.exit_code == 2 and f"invalid {flag[2:]} JSON" in refused.stderr


def test_exec_list_sends_its_limit(server: LiveServer, worktree: Path) -> None:
    sid = new_session(server, new_template(server), worktree)
    assert ok(server, "exec", "list", sid) == "No executions found\n"

    async def many() -> None:
        async with VmClient(server.url) as client:
            for i in range(51):
                await client.repl(sid, str(i))

    asyncio.run(many())
    listed = ok(server, "exec", "list", sid).splitlines()
    assert listed[0] == row("Execution ID", "Kind", "Status", "Started", widths=(36, 10, 10, 20))
    assert listed[1] == "-" * 80 and len(listed) == 2 + 50  # the default limit, 50
    assert re.fullmatch(r"[0-9a-f-]{36} repl       ok         " + RFC3339, listed[2])
    assert len(ok(server, "exec", "list", sid, "--limit", "3").splitlines()) == 5
    zero = cli(server, "exec", "list", sid, "--limit", "0")
    assert zero.exit_code == 1
    assert zero.stderr.startswith("Error: api error (status=400, code=VALIDATION_ERROR): ")


def test_exec_get_lines(server: LiveServer, worktree: Path) -> None:
    sid = new_session(server, new_template(server), worktree)
    eid = EXECUTION_ID.search(ok(server, "exec", "run-file", sid, "app.js", "--args", '{"n": 1}'))
    assert eid
    shown = ok(server, "exec", "get", eid.group(1)).splitlines()
    assert shown[:4] == [
        f"Execution ID: {eid.group(1)}",
        f"Session ID: {sid}",
        "Kind: run_file",
        "Status: ok",
    ]
    assert re.fullmatch(f"Started: {RFC3339}", shown[4]) and re.fullmatch(f"Ended: {RFC3339}", shown[5])
    assert shown[6:] == ["Path: app.js", 'Result: {"type":"number","preview":"2","json":2}']
    failed = EXECUTION_ID.search(ok(server, "exec", "repl", sid, "nope"))
    assert failed
    lines = ok(server, "exec", "get", failed.group(1)).splitlines()
    assert "Input: nope" in lines and lines[-1].startswith('Error: {"name":"ReferenceError"')


def test_exec_events_columns(server: LiveServer, worktree: Path) -> None:
    sid = new_session(server, new_template(server), worktree)
    out = ok(server, "exec", "repl", sid, "console.log('x'.repeat(60)); 1")
    eid = EXECUTION_ID.search(out)
    assert eid
    events = as_json(server, "exec", "events", eid.group(1))
    lines = ok(server, "exec", "events", eid.group(1)).splitlines()
    assert lines[0] == "Seq   Timestamp            Type            Payload"
    assert lines[1] == "-" * 80 and len(lines) == 2 + 3
    payload = json.dumps(events[1]["payload"], separators=(",", ":"))
    assert re.fullmatch(r"2     \d{2}:\d{2}:\d{2}             console         ", lines[3][:43])
    assert lines[3][43:] == payload[:47] + "..."
    after = ok(server, "exec", "events", eid.group(1), "--after-seq", "2").splitlines()
    assert [line.split()[0] for line in after[2:]] == ["3"]
    assert ok(server, "exec", "events", eid.group(1), "--after-seq", "3") == "No events found\n"
