"""UPSTREAM-CLI.md sections 1 and 2 (global options, help, errors), ops and libs: the original's forms.

The template, session and exec forms are in test_cli_upstream.py, whose helpers this file shares.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from server.cli.help import TOPICS
from server.runtime import libraries
from tests.cli import test_cli_upstream as upstream
from tests.cli.support import VM_SYSTEM, LiveServer, StaticHttp, run
from tests.conftest import MISSING, free_port, stop_process
from tests.test_libraries import FakeRegistry, registry  # noqa: F401 - the fixture
from tests.test_upstream_scripts import publish_catalog

worktree = upstream.worktree  # the fixture (the server is in conftest.py)
cli, ok, new_session, new_template = upstream.cli, upstream.ok, upstream.new_session, upstream.new_template
TOPIC_DIR = Path(__file__).resolve().parents[2] / "server" / "cli" / "topics"


# -- 1 Global options and help ------------------------------------------------------------------


def test_global_db_and_log_level_come_before_or_after_the_command(server: LiveServer) -> None:
    before = run("--server-url", server.url, "--db", "x.db", "--log-level", "warn", "template", "list")
    assert (before.exit_code, before.stdout) == (0, "No templates found\n")
    after = run("template", "list", "--server-url", server.url, "--db", "x.db", "--log-level", "error")
    assert (after.exit_code, after.stdout) == (0, "No templates found\n")
    assert run("--log-level", "loud", "template", "list").exit_code == 2


def _serve(cwd: Path, global_flags: list[str], serve_flags: list[str]) -> str:
    """`vm-system [global flags] serve --listen ... [serve flags]`: make one request, stop; the log."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = cwd / f"serve-{port}.log"
    args = [str(VM_SYSTEM), *global_flags, "serve", "--listen", f"127.0.0.1:{port}", *serve_flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v1/health", timeout=10):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"serve did not start: {log_path.read_text()}")
                time.sleep(0.05)
        with urllib.request.urlopen(f"{url}/api/v1/templates", timeout=10) as resp:
            assert resp.status == 200
    finally:
        stop_process(proc)
    return log_path.read_text()


def test_global_db_and_log_level_reach_serve(tmp_path: Path) -> None:
    quiet = _serve(tmp_path, ["--db", "global.db", "--log-level", "warn"], [])
    assert (tmp_path / "global.db").exists()
    assert "GET /api/v1/templates" not in quiet
    loud = _serve(tmp_path, ["--db", "ignored.db", "--log-level", "info"], ["--db", "own.db"])
    assert (tmp_path / "own.db").exists() and not (tmp_path / "ignored.db").exists()  # serve --db wins
    assert "GET /api/v1/templates 200" in loud


def test_help_shows_the_seven_topics() -> None:
    listed = run("help")
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()[2:9]] == list(TOPICS)
    titles = set()
    for slug in TOPICS:
        shown = run("help", slug)
        assert shown.exit_code == 0
        assert shown.stdout == (TOPIC_DIR / f"{slug}.md").read_text(), slug
        titles.add(shown.stdout.splitlines()[0])
    assert len(titles) == len(TOPICS)  # seven different texts
    assert "Usage: vm-system exec repl" in run("help", "exec", "repl").stdout
    unknown = run("help", "nope")
    assert unknown.exit_code == 2 and "getting-started" in unknown.stderr


def test_top_level_groups() -> None:
    commands = run("--help").stdout.split("Commands:")[1].split()
    for group in ("serve", "template", "session", "exec", "ops", "libs"):
        assert group in commands
    assert run("session", "delete", MISSING).exit_code == 2  # the original had none either


# -- 2 Errors and exit codes ----------------------------------------------------------------------


def test_an_api_error_is_one_stderr_line_and_exit_1(server: LiveServer) -> None:
    result = cli(server, "template", "get", MISSING)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"Error: api error (status=404, code=TEMPLATE_NOT_FOUND): template {MISSING} does not exist\n"
    )


def test_an_answer_without_an_envelope_falls_back_to_the_status() -> None:
    with StaticHttp({}) as other:
        result = run("--server-url", other.url, "template", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: api error (status=404): ")


def test_a_javascript_exception_is_exit_0_with_an_error_line(server: LiveServer, worktree: Path) -> None:
    sid = new_session(server, new_template(server), worktree)
    out = ok(server, "exec", "repl", sid, "throw new TypeError('no')").splitlines()
    assert out[1] == "Status: error"
    assert json.loads(out[2].removeprefix("Error: "))["message"] == "TypeError: no"


# -- 3 ops and libs --------------------------------------------------------------------------------


def test_ops_print_indented_json(server: LiveServer) -> None:
    assert ok(server, "ops", "health") == json.dumps({"status": "ok"}, indent=2) + "\n"
    summary = ok(server, "ops", "runtime-summary")
    assert summary == json.dumps(json.loads(summary), indent=2) + "\n"


def test_libs_download_list_and_cache_info(
    registry: FakeRegistry,  # noqa: F811 - the imported fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources = publish_catalog(registry)
    monkeypatch.chdir(tmp_path)
    env = {"VM_SYSTEM_NPM_REGISTRY": registry.url}
    assert run("libs", "cache-info").stdout == "No libraries cached. Run 'vm-system libs download' first.\n"

    downloaded = run("libs", "download", env=env)
    assert downloaded.exit_code == 0, downloaded.output
    cache = Path(".vm-cache", "libraries")
    assert downloaded.stdout.splitlines() == [
        f"Downloading libraries to: {cache}",
        "",
        "Cache info:",
        *(f"  {name}: {len(src)} bytes ({cache / (name + '.js')})" for name, src in sources.items()),
    ]

    listed = run("libs", "list").stdout.splitlines()
    assert listed[:2] == [f"Available libraries ({len(libraries.CATALOG)}):", ""]
    assert listed[2:6] == [
        "  lodash - lodash v4.17.21",
        f"    {libraries.CATALOG[0].description}",
        "    Source: npm lodash@4.17.21 (lodash.min.js)",
        "    Global: _",
    ]

    info = run("libs", "cache-info").stdout.splitlines()
    assert info[:4] == [
        f"Cached libraries ({len(sources)}):",
        "",
        "  lodash-4.17.21",
        f"    Path: {cache}/lodash-4.17.21.js",
    ]
    total = sum(len(s) for s in sources.values())
    assert info[-1] == f"Total cache size: {total} bytes ({total / 1024:.2f} KB)"
