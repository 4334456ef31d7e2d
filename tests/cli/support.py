"""What the CLI tests share: a real server in a thread, the CLI runner, sessions, static HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from server.app import create_app
from server.cli import cli
from server.client import VmClient
from server.config import Settings

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
