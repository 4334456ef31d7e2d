"""Native modules (fs, database, exec) against real files, real SQLite and real processes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.runtime.modules import (
    BUILTIN_NAMES,
    CATALOG,
    ModuleHost,
    ModuleNameError,
    catalog_json,
    module_functions,
    normalize_module_name,
)


class Host:
    """Calls a ModuleHost the way the JS side does: JSON args in, JSON envelope out."""

    def __init__(self, host: ModuleHost) -> None:
        self.host = host

    def raw(self, module: str, function: str, *args: Any) -> dict[str, Any]:
        return json.loads(self.host.call(module, function, json.dumps(list(args))))

    def ok(self, module: str, function: str, *args: Any) -> Any:
        answer = self.raw(module, function, *args)
        assert "ok" in answer, answer
        return answer["ok"]

    def error(self, module: str, function: str, *args: Any) -> dict[str, str]:
        answer = self.raw(module, function, *args)
        assert set(answer) == {"error"}, answer
        assert set(answer["error"]) == {"name", "message"}
        return answer["error"]


@pytest.fixture
def host(worktree: Path) -> Iterator[Host]:
    module_host = ModuleHost(str(worktree), ["fs", "database", "exec"], lambda: None)
    yield Host(module_host)
    module_host.close()


# -- catalog and names --------------------------------------------------------------------


def test_catalog_lists_the_three_modules_with_the_original_function_names() -> None:
    assert catalog_json() == [
        {
            "name": "fs",
            "description": CATALOG[0].description,
            "functions": ["readFileSync", "writeFileSync", "existsSync", "readdirSync"],
        },
        {
            "name": "database",
            "description": CATALOG[1].description,
            "functions": ["configure", "query", "exec", "close"],
        },
        {"name": "exec", "description": CATALOG[2].description, "functions": ["run"]},
    ]
    assert all(info.description for info in CATALOG)


def test_normalize_trims_and_lowercases() -> None:
    assert normalize_module_name("  FS ") == "fs"
    assert normalize_module_name("Database") == "database"


@pytest.mark.parametrize("raw", ["", "   "])
def test_blank_module_name_is_refused(raw: str) -> None:
    with pytest.raises(ModuleNameError, match="must not be empty.*fs, database, exec"):
        normalize_module_name(raw)


@pytest.mark.parametrize("raw", sorted(BUILTIN_NAMES) + [" Console ", "JSON", "Math"])
def test_builtin_names_are_refused(raw: str) -> None:
    with pytest.raises(ModuleNameError, match="JavaScript built-in") as info:
        normalize_module_name(raw)
    assert info.value.reason == str(info.value)


def test_unknown_module_is_refused_with_the_choices() -> None:
    with pytest.raises(ModuleNameError, match="unknown native module 'net'.*fs, database, exec"):
        normalize_module_name("net")


def test_module_functions_maps_enabled_modules() -> None:
    assert module_functions([" EXEC", "fs"]) == {
        "exec": ["run"],
        "fs": ["readFileSync", "writeFileSync", "existsSync", "readdirSync"],
    }
    with pytest.raises(ModuleNameError):
        module_functions(["math"])


# -- dispatch -----------------------------------------------------------------------------


def test_disabled_module_is_an_invalid_module_error(worktree: Path) -> None:
    only_fs = Host(ModuleHost(str(worktree), ["fs"], lambda: None))
    err = only_fs.error("exec", "run", "echo", ["hi"])
    assert err["name"] == "Error"
    assert "Invalid module 'exec'" in err["message"]


def test_unknown_function_is_a_type_error(host: Host) -> None:
    err = host.error("fs", "rmSync", "a")
    assert err == {"name": "TypeError", "message": "fs.rmSync is not a function"}


def test_malformed_arguments_never_raise(host: Host) -> None:
    answer = json.loads(host.host.call("fs", "readFileSync", "{not json"))
    assert answer["error"]["name"] == "TypeError"
    assert "not valid JSON" in answer["error"]["message"]
    answer = json.loads(host.host.call("fs", "readFileSync", '{"path": "a"}'))
    assert "must be a JSON array" in answer["error"]["message"]


def test_a_bug_inside_a_handler_comes_back_as_an_error(host: Host) -> None:
    # A handler returning something that is not JSON is a bug; it must not escape call().
    host.host._handlers[("fs", "existsSync")] = lambda *_: object()  # fault injection
    err = host.error("fs", "existsSync", "a")
    assert err["name"] == "Error"
    assert err["message"].startswith("fs.existsSync failed: TypeError")


# -- fs -----------------------------------------------------------------------------------


def test_write_then_read_round_trips_text(host: Host, worktree: Path) -> None:
    assert host.ok("fs", "writeFileSync", "notes.txt", "héllo\nwörld") is None
    assert (worktree / "notes.txt").read_text(encoding="utf-8") == "héllo\nwörld"
    assert host.ok("fs", "readFileSync", "notes.txt") == "héllo\nwörld"
    assert host.ok("fs", "readFileSync", "notes.txt", "utf8") == "héllo\nwörld"
    assert host.ok("fs", "readFileSync", "./notes.txt", "UTF-8") == "héllo\nwörld"
    assert host.ok("fs", "readFileSync", "notes.txt", {"encoding": "utf8"}) == "héllo\nwörld"


def test_read_replaces_invalid_utf8(host: Host, worktree: Path) -> None:
    (worktree / "bin.dat").write_bytes(b"ok\xff\xfeend")
    assert host.ok("fs", "readFileSync", "bin.dat") == "ok\ufffd\ufffdend"


def test_read_rejects_other_encodings(host: Host, worktree: Path) -> None:
    (worktree / "a.txt").write_text("x")
    err = host.error("fs", "readFileSync", "a.txt", "base64")
    assert err["name"] == "TypeError"
    assert "unsupported encoding 'base64'" in err["message"]


def test_missing_file_error_looks_like_node(host: Host) -> None:
    err = host.error("fs", "readFileSync", "missing.txt")
    assert err == {
        "name": "Error",
        "message": "ENOENT: no such file or directory, open 'missing.txt'",
    }


def test_reading_a_directory_is_eisdir(host: Host, worktree: Path) -> None:
    (worktree / "dir").mkdir()
    err = host.error("fs", "readFileSync", "dir")
    assert err["message"].startswith("EISDIR: illegal operation on a directory")


def test_write_does_not_create_parent_directories(host: Host, worktree: Path) -> None:
    err = host.error("fs", "writeFileSync", "nope/out.txt", "x")
    assert err["message"] == "ENOENT: no such file or directory, open 'nope/out.txt'"
    assert not (worktree / "nope").exists()


def test_write_requires_string_data(host: Host, worktree: Path) -> None:
    err = host.error("fs", "writeFileSync", "a.txt", 42)
    assert err["name"] == "TypeError"
    assert '"data"' in err["message"] and "got a number" in err["message"]
    assert not (worktree / "a.txt").exists()


def test_path_must_be_a_string(host: Host) -> None:
    err = host.error("fs", "readFileSync", None)
    assert err["name"] == "TypeError"
    assert '"path"' in err["message"]


def test_exists_and_readdir(host: Host, worktree: Path) -> None:
    (worktree / "b.txt").write_text("b")
    (worktree / "a.txt").write_text("a")
    (worktree / "sub").mkdir()
    (worktree / "sub" / "c.txt").write_text("c")
    assert host.ok("fs", "existsSync", "a.txt") is True
    assert host.ok("fs", "existsSync", "sub") is True
    assert host.ok("fs", "existsSync", "zzz") is False
    assert host.ok("fs", "readdirSync", ".") == ["a.txt", "b.txt", "sub"]
    assert host.ok("fs", "readdirSync", "sub") == ["c.txt"]
    err = host.error("fs", "readdirSync", "none")
    assert err["message"] == "ENOENT: no such file or directory, scandir 'none'"


@pytest.mark.parametrize("escape", ["../outside.txt", "sub/../../outside.txt"])
def test_dotdot_escapes_are_refused(host: Host, worktree: Path, escape: str) -> None:
    (worktree.parent / "outside.txt").write_text("secret")
    (worktree / "sub").mkdir()
    err = host.error("fs", "readFileSync", escape)
    assert err["name"] == "Error"
    assert err["message"].startswith(f"EACCES: path escapes the session worktree: {escape!r}")
    assert host.ok("fs", "existsSync", escape) is False
    assert "escapes" in host.error("fs", "writeFileSync", escape, "pwned")["message"]
    assert (worktree.parent / "outside.txt").read_text() == "secret"


def test_absolute_paths_are_refused(host: Host, worktree: Path) -> None:
    (worktree / "a.txt").write_text("a")
    target = str(worktree / "a.txt")
    err = host.error("fs", "readFileSync", target)
    assert "EACCES: absolute paths are not allowed" in err["message"]
    assert repr(target) in err["message"]
    assert host.ok("fs", "existsSync", target) is False
    assert "absolute" in host.error("fs", "readdirSync", "/")["message"]


def test_symlinks_leaving_the_worktree_are_refused(host: Host, worktree: Path) -> None:
    outside = worktree.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (worktree / "link.txt").symlink_to(outside / "secret.txt")
    (worktree / "linkdir").symlink_to(outside)
    assert "escapes" in host.error("fs", "readFileSync", "link.txt")["message"]
    assert "escapes" in host.error("fs", "readFileSync", "linkdir/secret.txt")["message"]
    assert "escapes" in host.error("fs", "readdirSync", "linkdir")["message"]
    assert "escapes" in host.error("fs", "writeFileSync", "linkdir/new.txt", "x")["message"]
    assert host.ok("fs", "existsSync", "link.txt") is False
    assert not (outside / "new.txt").exists()


def test_symlinks_inside_the_worktree_work(host: Host, worktree: Path) -> None:
    (worktree / "real.txt").write_text("inside")
    (worktree / "alias.txt").symlink_to(worktree / "real.txt")
    assert host.ok("fs", "readFileSync", "alias.txt") == "inside"


# -- database -----------------------------------------------------------------------------


def test_database_before_configure_is_a_clear_error(host: Host) -> None:
    err = host.error("database", "query", "SELECT 1")
    assert "no database is configured" in err["message"]
    assert "database.configure(" in err["message"]


def test_database_round_trip_in_a_worktree_file(host: Host, worktree: Path) -> None:
    assert host.ok("database", "configure", "app.db") is None
    host.ok("database", "exec", "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    first = host.ok("database", "exec", "INSERT INTO t (name, score) VALUES (?, ?)", "ann", 1.5)
    assert first == {"rowsAffected": 1, "lastInsertId": 1}
    second = host.ok("database", "exec", "INSERT INTO t (name, score) VALUES (?, ?)", "bob", None)
    assert second == {"rowsAffected": 1, "lastInsertId": 2}
    updated = host.ok("database", "exec", "UPDATE t SET score = ?", 3)
    assert updated["rowsAffected"] == 2
    rows = host.ok("database", "query", "SELECT name, id, score FROM t WHERE id >= ? ORDER BY id", 1)
    assert rows == [
        {"name": "ann", "id": 1, "score": 3.0},
        {"name": "bob", "id": 2, "score": 3.0},
    ]
    # Column order is kept in the JSON text the JS side parses.
    text = host.host.call("database", "query", json.dumps(["SELECT name, id FROM t LIMIT 1"]))
    assert text.index('"name"') < text.index('"id"')
    assert host.ok("database", "close") is None
    assert (worktree / "app.db").is_file()
    # Data was committed: reopening sees it.
    host.ok("database", "configure", "app.db")
    assert host.ok("database", "query", "SELECT count(*) AS n FROM t") == [{"n": 2}]


def test_database_in_memory_and_multi_statement_exec(host: Host) -> None:
    host.ok("database", "configure", ":memory:")
    result = host.ok(
        "database",
        "exec",
        "CREATE TABLE a (x); INSERT INTO a VALUES (1); INSERT INTO a VALUES (2);",
    )
    assert result == {"rowsAffected": 2, "lastInsertId": 2}
    assert host.ok("database", "query", "SELECT x FROM a ORDER BY x") == [{"x": 1}, {"x": 2}]


def test_database_blobs_come_back_as_byte_arrays(host: Host) -> None:
    host.ok("database", "configure", ":memory:")
    assert host.ok("database", "query", "SELECT x'00ff10' AS b, true AS t") == [{"b": [0, 255, 16], "t": 1}]


def test_database_sql_errors_and_bad_params(host: Host) -> None:
    host.ok("database", "configure", ":memory:")
    err = host.error("database", "query", "SELECT * FROM nope")
    assert err["message"] == "database.query failed: no such table: nope"
    err = host.error("database", "exec", "SELECT ?", {"a": 1})
    assert err["name"] == "TypeError"
    assert "parameter 1 is an object" in err["message"]


def test_database_path_is_confined(host: Host, worktree: Path) -> None:
    err = host.error("database", "configure", "../escape.db")
    assert "escapes the session worktree" in err["message"]
    assert not (worktree.parent / "escape.db").exists()
    err = host.error("database", "configure", "/tmp/abs.db")
    assert "absolute paths are not allowed" in err["message"]


def test_database_query_is_interrupted_at_the_deadline(worktree: Path) -> None:
    deadline = [None]
    module_host = ModuleHost(str(worktree), ["database"], lambda: deadline[0])
    host = Host(module_host)
    host.ok("database", "configure", ":memory:")
    deadline[0] = time.monotonic() + 0.2
    started = time.monotonic()
    err = host.error(
        "database",
        "query",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    )
    assert time.monotonic() - started < 5
    assert "time limit" in err["message"]
    module_host.close()


def test_close_closes_the_database_handle(host: Host) -> None:
    host.ok("database", "configure", ":memory:")
    host.host.close()
    assert "no database is configured" in host.error("database", "query", "SELECT 1")["message"]


# -- exec ---------------------------------------------------------------------------------


def test_exec_returns_stdout_and_runs_in_the_worktree(host: Host, worktree: Path) -> None:
    assert host.ok("exec", "run", "echo", ["hello", "world"]) == "hello world\n"
    # Programs come from the box's read-only system directories (not this test's venv).
    assert host.ok("exec", "run", "pwd", []).strip() == os.path.realpath(worktree)


def test_exec_does_not_use_a_shell(host: Host) -> None:
    assert host.ok("exec", "run", "echo", ["$HOME; rm -rf /"]) == "$HOME; rm -rf /\n"


def test_exec_non_zero_exit_throws_with_stderr(host: Host) -> None:
    err = host.error("exec", "run", "sh", ["-c", "echo out; echo err >&2; exit 3"])
    assert err["name"] == "Error"
    assert err["message"] == "exec.run: 'sh' exited with status 3: err"


def test_exec_command_not_found(host: Host) -> None:
    err = host.error("exec", "run", "definitely-not-a-command-xyz", [])
    assert "command not found: 'definitely-not-a-command-xyz'" in err["message"]


def test_exec_args_must_be_strings(host: Host) -> None:
    err = host.error("exec", "run", "echo", ["a", 1])
    assert err["name"] == "TypeError"
    assert "array of strings" in err["message"]
    assert host.error("exec", "run", "", [])["name"] == "TypeError"
    assert host.ok("exec", "run", "echo") == "\n"


def test_exec_is_killed_at_the_deadline(worktree: Path) -> None:
    module_host = ModuleHost(str(worktree), ["exec"], lambda: time.monotonic() + 0.3)
    host = Host(module_host)
    started = time.monotonic()
    # The child of sh keeps the pipes open; the whole process group must be killed.
    err = host.error("exec", "run", "sh", ["-c", "sleep 30; echo done"])
    assert time.monotonic() - started < 5
    assert "time limit" in err["message"] and "killed" in err["message"]


def test_exec_refuses_to_start_after_the_deadline(worktree: Path) -> None:
    module_host = ModuleHost(str(worktree), ["exec"], lambda: time.monotonic() - 1)
    err = Host(module_host).error("exec", "run", "echo", ["x"])
    assert "time is up" in err["message"]
