"""The package as a user installs it: a wheel in a fresh virtualenv, served from outside the repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import server
from tests.conftest import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
# What the build needs (the Dockerfile copies the same files): nothing else from the checkout.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "server", "static", "templates")


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that could make the venv see the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VM_SYSTEM_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(extra)
    return env


def _run(*args: str | Path, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the wheel, the venv's bin directory): built from a copy of the sources, installed with pip."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = base / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist, src, cwd=base)
    (wheel,) = dist.glob("vm_system-*.whl")
    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    # An ordinary install: pip resolves the wheel's declared dependencies itself.
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel, cwd=base)
    yield wheel, venv / "bin"


def test_the_wheel_carries_the_ui_files(installed: tuple[Path, Path]) -> None:
    wheel, _bin = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("static", "templates"):
        expected = {
            f"server/{folder}/{p.relative_to(ROOT / folder).as_posix()}"
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        assert expected and expected <= names, sorted(expected - names)
    assert not any(n.startswith(("static/", "templates/", "tests/")) for n in names)


def test_version_and_help_come_from_the_installed_package(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    _wheel, bin_dir = installed
    done = _run(bin_dir / "vm-system", "--version", cwd=tmp_path)
    assert done.stdout.strip() == f"vm-system, version {server.__version__}"
    where = _run(bin_dir / "python", "-c", "import server; print(server.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent), where.stdout  # not the checkout
    # The help topics are package data too.
    topic = _run(bin_dir / "vm-system", "help", "getting-started", cwd=tmp_path)
    assert topic.stdout == (ROOT / "server" / "cli" / "topics" / "getting-started.md").read_text()


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


@pytest.mark.timeout(600)
def test_installed_server_serves_the_ui_and_the_api(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _wheel, bin_dir = installed
    home = tmp_path / "elsewhere"  # a working directory outside the repository
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "vm-system"), "serve", "--listen", f"127.0.0.1:{port}", "--db", "vm.db"],
            cwd=home,
            env=_clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get(f"{url}/api/v1/health")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the installed server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)

        status, ctype, body = _get(f"{url}/")  # redirects to the sessions page
        assert (status, ctype.split(";")[0]) == (200, "text/html")
        assert "/static/js/pages/sessions.js" in body
        status, ctype, body = _get(f"{url}/static/js/api.js")
        assert status == 200 and "javascript" in ctype
        assert body == (ROOT / "static" / "js" / "api.js").read_text()
        status, ctype, body = _get(f"{url}/templates")
        assert status == 200 and ctype.startswith("text/html") and "<h1" in body
        status, ctype, body = _get(f"{url}/api/v1/health")
        assert (status, ctype.split(";")[0], json.loads(body)) == (200, "application/json", {"status": "ok"})

        # The installed CLI drives the installed server: a session runs JavaScript.
        cli = [str(bin_dir / "vm-system"), "--server-url", url]
        created = _run(*cli, "template", "create", "--name", "from-wheel", cwd=home)
        match = re.search(r"Created template: .* \(ID: ([0-9a-f-]+)\)", created.stdout)
        assert match, created.stdout
        work = home / "work"  # not the directory holding the server's database: that is refused
        work.mkdir()
        session = _run(
            *cli,
            "session",
            "create",
            "--template-id",
            match.group(1),
            "--workspace-id",
            "ws",
            "--base-commit",
            "c0ffee",
            "--worktree-path",
            work,
            cwd=home,
        )
        sid = re.search(r"Created session: ([0-9a-f-]+)", session.stdout)
        assert sid, session.stdout
        repl = _run(*cli, "exec", "repl", sid.group(1), "40 + 2", cwd=home)
        assert '"preview":"42"' in repl.stdout
        assert (home / "vm.db").exists()  # the relative --db is relative to the working directory
    finally:
        stop_process(proc)
