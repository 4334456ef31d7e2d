"""The `database` module reaches one SQLite file in the worktree and nothing else (API.md §13, §15):
ATTACH, VACUUM INTO, DETACH and extensions are refused; configure(driver, dsn) is the Go form."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.runtime.modules import ModuleHost
from tests.test_modules import Host


@pytest.fixture
def db(worktree: Path) -> Iterator[Host]:
    module_host = ModuleHost(str(worktree), ["database"], lambda: None)
    yield Host(module_host)
    module_host.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A SQLite file beside the worktree: what an escaping statement would reach."""
    path = tmp_path / "outside.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO events (text) VALUES ('original')")
    conn.commit()
    conn.close()
    return path


def outside_rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, text FROM events").fetchall()
    finally:
        conn.close()


def test_attach_of_another_file_is_refused(db: Host, worktree: Path, outside: Path) -> None:
    db.ok("database", "configure", "app.db")
    for sql in (
        f"ATTACH DATABASE '{outside}' AS other",
        "ATTACH 'sibling.db' AS s",
        "ATTACH ':memory:' AS m",
    ):
        err = db.error("database", "exec", sql)
        assert err["message"].startswith("database.exec: ATTACH (and VACUUM INTO"), err
        assert "reaches no other file" in err["message"]
    assert outside_rows(outside) == [(1, "original")]
    assert not (worktree / "sibling.db").exists()


def test_vacuum_into_is_refused_and_plain_vacuum_works(db: Host, tmp_path: Path, worktree: Path) -> None:
    db.ok("database", "configure", "app.db")
    db.ok("database", "exec", "CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(5000));")
    for target in (tmp_path / "copy.db", worktree / "copy.db"):
        err = db.error("database", "exec", f"VACUUM INTO '{target}'")
        assert "VACUUM INTO" in err["message"] and "not allowed" in err["message"]
        assert not target.exists()
    db.ok("database", "exec", "DELETE FROM t")
    db.ok("database", "exec", "VACUUM")  # VACUUM's own temporary database is still allowed
    assert db.ok("database", "query", "SELECT count(*) AS n FROM t") == [{"n": 0}]


def test_extensions_and_temp_directory_pragmas_are_refused(db: Host) -> None:
    db.ok("database", "configure", ":memory:")
    err = db.error("database", "query", "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libm.so.6')")
    assert "load_extension() is not allowed" in err["message"]
    err = db.error("database", "exec", "PRAGMA temp_store_directory = '/tmp'")
    assert "PRAGMA temp_store_directory is not allowed" in err["message"]
    err = db.error("database", "exec", "DETACH DATABASE main")
    assert "DETACH is not allowed" in err["message"]
    # Ordinary SQL, functions and pragmas are untouched.
    assert db.ok("database", "query", "SELECT upper('a') AS u, json_array(1, 2) AS j") == [
        {"u": "A", "j": "[1,2]"}
    ]
    assert db.ok("database", "query", "PRAGMA temp_store") == [{"temp_store": 2}]  # MEMORY


def test_configure_with_the_go_driver_form(db: Host, worktree: Path) -> None:
    db.ok("database", "configure", "sqlite3", "app.db")
    db.ok("database", "exec", "CREATE TABLE t (x)")
    db.ok("database", "exec", "INSERT INTO t VALUES (?)", 7)
    assert (worktree / "app.db").is_file()
    db.ok("database", "configure", "sqlite3", "file:app.db?mode=ro")
    assert db.ok("database", "query", "SELECT x FROM t") == [{"x": 7}]
    assert "readonly" in db.error("database", "exec", "INSERT INTO t VALUES (8)")["message"]
    db.ok(
        "database", "configure", "sqlite", "file:app.db?_foreign_keys=1&_busy_timeout=2500&_journal_mode=WAL"
    )
    assert db.ok("database", "query", "PRAGMA foreign_keys") == [{"foreign_keys": 1}]
    assert db.ok("database", "query", "PRAGMA busy_timeout") == [{"timeout": 2500}]
    assert db.ok("database", "query", "PRAGMA journal_mode") == [{"journal_mode": "wal"}]
    for dsn in (":memory:", "file::memory:?cache=shared", "file:anything?mode=memory", ""):
        db.ok("database", "configure", "sqlite3", dsn)
        db.ok("database", "exec", "CREATE TABLE m (x)")  # a fresh, empty database each time
    assert not (worktree / "anything").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("postgres", "postgres://localhost/db"), "driver 'postgres' is not supported; use 'sqlite3'"),
        (("mysql", "x"), "driver 'mysql' is not supported"),
        (("sqlite3", 5), "the DSN must be a string, got a number"),
        (("sqlite3", "file:///etc/passwd"), "names an absolute file"),
        (("sqlite3", "/etc/passwd"), "EACCES: absolute paths are not allowed"),
        (("sqlite3", "../outside.db"), "EACCES: path escapes the session worktree"),
        (("sqlite3", "file:../outside.db?mode=ro"), "EACCES: path escapes the session worktree"),
        (("sqlite3", "app.db?vfs=unix-none"), "DSN option 'vfs' is not supported; allowed: mode, cache"),
        (("sqlite3", "file:app.db?modeof=/etc/passwd"), "DSN option 'modeof' is not supported"),
        (("sqlite3", "app.db?mode=rwx"), "mode='rwx' is not allowed; use one of ro, rw, rwc, memory"),
        (("sqlite3", "app.db?_busy_timeout=soon"), "_busy_timeout='soon' is not valid; use a number"),
        (("sqlite3", "app.db?_journal_mode=WAL;DROP"), "_journal_mode='WAL;DROP' is not valid"),
    ],
)
def test_configure_refuses_other_drivers_paths_and_options(db: Host, args: tuple, message: str) -> None:
    err = db.error("database", "configure", *args)
    assert message in err["message"], err


def test_a_symlinked_database_outside_the_worktree_is_refused(
    db: Host, worktree: Path, outside: Path
) -> None:
    (worktree / "link.db").symlink_to(outside)
    for args in (("link.db",), ("sqlite3", "link.db"), ("sqlite3", "file:link.db?mode=rw")):
        err = db.error("database", "configure", *args)
        assert "path escapes the session worktree" in err["message"], err
    assert outside_rows(outside) == [(1, "original")]


async def test_the_go_form_works_from_javascript(client, api, worktree):
    tpl = await api.template()
    await client.post(f"/api/v1/templates/{tpl['id']}/modules", json={"name": "database"})
    session = await api.session(tpl["id"])
    code = """
      const db = require('database');
      db.configure('sqlite3', 'notes.db');
      db.exec('CREATE TABLE notes (body TEXT)');
      db.exec('INSERT INTO notes VALUES (?)', 'hello');
      db.query('SELECT body FROM notes')[0].body
    """
    assert (await api.value(session["id"], code))["json"] == "hello"
    status, body = await api.repl(session["id"], "require('database').configure('postgres', 'x')")
    assert status == 201 and body["status"] == "error"
    assert "driver 'postgres' is not supported" in body["error"]["message"]
    assert (worktree / "notes.db").is_file()
