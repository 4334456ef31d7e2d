"""Operator policy (API.md §13): --allow-modules and --worktree-root beat what templates and
sessions ask for; system directories and the server's own files are never worktrees."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.config import ConfigError, Settings
from tests.conftest import expect_error, get_json, session_body

VM_SYSTEM = str(Path(sys.executable).parent / "vm-system")


async def add_module(client: Any, template_id: str, name: str) -> Any:
    return await client.post(f"/api/v1/templates/{template_id}/modules", json={"name": name})


# ---------------------------------------------------------------- --allow-modules


async def test_exec_is_off_unless_the_operator_lists_it(client, api):
    tpl = await api.template()
    assert (await add_module(client, tpl["id"], "fs")).status == 201
    assert (await add_module(client, tpl["id"], "database")).status == 201
    err = await expect_error(await add_module(client, tpl["id"], " EXEC "), 422, "MODULE_NOT_ALLOWED")
    assert "'exec' is not allowed on this server" in err["message"]
    assert "--allow-modules" in err["message"]
    assert err["details"]["allowed_modules"] == ["fs", "database"]
    assert await get_json(client, f"/api/v1/templates/{tpl['id']}/modules") == ["fs", "database"]


async def test_a_narrower_policy_refuses_a_default_module(aiohttp_client, settings):
    client = await aiohttp_client(create_app(dataclasses.replace(settings, allow_modules=("fs",))))
    tpl = await (await client.post("/api/v1/templates", json={"name": "narrow"})).json()
    await expect_error(await add_module(client, tpl["id"], "database"), 422, "MODULE_NOT_ALLOWED")
    assert (await add_module(client, tpl["id"], "fs")).status == 201


async def test_a_stored_template_with_a_refused_module_starts_no_session(aiohttp_client, settings, worktree):
    # The template got `exec` while the server allowed it; the server now runs without it.
    permissive = dataclasses.replace(settings, allow_modules=("fs", "database", "exec"))
    first = await aiohttp_client(create_app(permissive))
    tpl = await (await first.post("/api/v1/templates", json={"name": "had-exec"})).json()
    assert (await add_module(first, tpl["id"], "exec")).status == 201
    await first.close()

    client = await aiohttp_client(create_app(settings))
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    err = await expect_error(r, 422, "MODULE_NOT_ALLOWED")
    assert "'had-exec' enables 'exec'" in err["message"]
    assert "--allow-modules fs,database" in err["message"]
    assert err["details"]["refused_modules"] == ["exec"]
    assert await get_json(client, "/api/v1/sessions") == []  # refused before any row was written
    # Taking the module off the template is the fix the message names.
    assert (await client.delete(f"/api/v1/templates/{tpl['id']}/modules/exec")).status == 200
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    assert r.status == 201, await r.text()


def test_settings_read_the_policy_from_flags_and_environment(tmp_path: Path) -> None:
    env = {"VM_SYSTEM_ALLOW_MODULES": "fs, EXEC", "VM_SYSTEM_WORKTREE_ROOTS": f"{tmp_path}{os.pathsep}/tmp"}
    s = Settings.from_env(env)
    assert s.allow_modules == ("fs", "exec")
    assert s.worktree_roots == (tmp_path.resolve(), Path("/tmp").resolve())
    s = Settings.from_env(env, allow_modules="database", worktree_roots=[str(tmp_path)])
    assert (s.allow_modules, s.worktree_roots) == (("database",), (tmp_path.resolve(),))
    assert Settings.from_env({}).allow_modules == ("fs", "database")
    with pytest.raises(ConfigError, match="not an existing directory"):
        Settings.from_env({}, worktree_roots=[str(tmp_path / "missing")])


def test_an_unknown_module_in_the_policy_stops_the_server(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="--allow-modules: unknown native module 'net'"):
        create_app(dataclasses.replace(settings, allow_modules=("fs", "net")))


def test_serve_refuses_exec_without_bubblewrap(tmp_path: Path) -> None:
    # A PATH without bwrap stands for a machine without the package.
    result = subprocess.run(
        [
            VM_SYSTEM,
            "serve",
            "--db",
            str(tmp_path / "x.db"),
            "--allow-modules",
            "fs,exec",
            "--listen",
            "127.0.0.1:0",
        ],
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result
    assert "--allow-modules lists exec, but bubblewrap" in result.stderr
    assert "not installed" in result.stderr and "remove exec from --allow-modules" in result.stderr


# ---------------------------------------------------------------- worktrees


SYSTEM_PATHS = ["/", "/etc", "/etc/ssl", "/proc", "/proc/self/cwd", "/sys/kernel", "/dev", "/boot", "/usr"]
SYSTEM_PATHS += ["/bin", "/var", "/lib", "/lib64"]


@pytest.mark.parametrize("path", [p for p in SYSTEM_PATHS if os.path.isdir(p)])
async def test_system_directories_are_never_worktrees(client, api, path):
    tpl = await api.template()
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], path))
    err = await expect_error(r, 422, "INVALID_PATH")
    assert "system directory" in err["message"] or "overlaps the server's own files" in err["message"]
    assert err["details"]["worktree_path"] == path


async def test_tmp_and_var_tmp_stay_allowed(client, api, tmp_path):
    tpl = await api.template()
    for base in ("/tmp", "/var/tmp"):
        wt = Path(base) / f"vm-policy-{tmp_path.name}"
        wt.mkdir(exist_ok=True)
        try:
            r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], wt))
            assert r.status == 201, await r.text()
            await client.delete(f"/api/v1/sessions/{(await r.json())['id']}")
        finally:
            wt.rmdir()


async def test_a_symlink_to_a_system_directory_is_refused(client, api, tmp_path):
    link = tmp_path / "looks-harmless"
    link.symlink_to("/etc")
    tpl = await api.template()
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], link))
    assert "system directory" in (await expect_error(r, 422, "INVALID_PATH"))["message"]


async def test_worktrees_may_not_hold_the_servers_own_files(client, api, settings, tmp_path):
    tpl = await api.template()
    # tmp_path holds the database (vm.db); the cache directory is settings.cache_dir.
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    for path, what in [
        (tmp_path, "its database"),
        (settings.cache_dir, "its library cache"),
        (Path(sys.prefix), "Python runtime"),
    ]:
        r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], path))
        err = await expect_error(r, 422, "INVALID_PATH")
        assert what in err["message"], err


async def test_worktree_roots_confine_where_sessions_may_work(aiohttp_client, settings, tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "repo").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (allowed / "escape").symlink_to(elsewhere)
    client = await aiohttp_client(create_app(dataclasses.replace(settings, worktree_roots=(allowed,))))
    tpl = await (await client.post("/api/v1/templates", json={"name": "rooted"})).json()

    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], allowed / "repo"))
    assert r.status == 201, await r.text()
    for path in (elsewhere, allowed / "escape", allowed / "repo" / ".." / ".." / "elsewhere"):
        r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], path))
        err = await expect_error(r, 422, "INVALID_PATH")
        assert "--worktree-root" in err["message"] and str(allowed) in err["message"]


# ---------------------------------------------------------------- no file contents in messages


async def test_files_outside_the_worktree_never_reach_a_message(client, api, worktree, tmp_path):
    secret = tmp_path / "host-file"
    secret.write_text("topsecretword\n")  # as JS, running it would say "topsecretword is not defined"
    (worktree / "run.js").symlink_to(secret)
    (worktree / "boot.js").symlink_to(secret)
    tpl = await api.template()
    session = await api.session(tpl["id"])
    r = await client.post("/api/v1/executions/run-file", json={"session_id": session["id"], "path": "run.js"})
    err = await expect_error(r, 422, "INVALID_PATH")
    assert "symlink escape" in err["message"] and "topsecret" not in await r.text()

    await client.post(f"/api/v1/templates/{tpl['id']}/startup-files", json={"path": "boot.js"})
    r = await client.post("/api/v1/sessions", json=session_body(tpl["id"], worktree))
    body = await r.text()
    assert r.status == 422 and "symlink escape" in body and "topsecret" not in body
    for s in await get_json(client, "/api/v1/sessions"):
        assert "topsecret" not in str(s)
