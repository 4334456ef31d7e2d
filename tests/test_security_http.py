"""Who may call the server, through real HTTP and WebSocket connections: Host, Origin, tokens.

DNS rebinding (a foreign ``Host`` on a loopback server), cross-site requests (a foreign
``Origin``, ``text/plain`` posts and WebSockets included), the browser headers of the UI, the
token cookie of the UI, tokens kept out of logs and out of the workers' environment, and a
real ``vm-system serve`` on a non-loopback address that generates a token and prints its URL.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.app import create_app
from tests.conftest import Api, expect_error, free_port

SECRET = "s3cret-token-value"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


async def _ws_status(client: Any, **headers: str) -> int:
    try:
        ws = await client.ws_connect("/api/v1/ws", headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


# ------------------------------------------------------------------ Host (DNS rebinding)


async def test_a_loopback_server_answers_only_loopback_host_names(client):
    port = client.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost", "127.0.0.5"):
        r = await client.get("/api/v1/templates", headers={"Host": host})
        assert r.status == 200, host
    for host in (f"evil.example:{port}", "attacker.test", f"127.0.0.1.evil.example:{port}"):
        r = await client.get("/api/v1/templates", headers={"Host": host})
        err = await expect_error(r, 403, "FORBIDDEN")
        assert "--allowed-hosts" in err["message"]
        r = await client.post("/api/v1/templates", json={"name": "rebound"}, headers={"Host": host})
        await expect_error(r, 403, "FORBIDDEN")
        r = await client.get("/sessions", headers={"Host": host})  # the UI too
        await expect_error(r, 403, "FORBIDDEN")
        # The WebSocket: a rebinding page sends its own name as Host *and* Origin, which match.
        assert await _ws_status(client, Host=host, Origin=f"http://{host}") == 403
    assert await (await client.get("/api/v1/templates")).json() == []


async def test_allowed_hosts_and_non_loopback_listeners(aiohttp_client, settings):
    named = await aiohttp_client(create_app(dataclasses.replace(settings, allowed_hosts=("vm.internal",))))
    assert (await named.get("/api/v1/health", headers={"Host": "vm.internal:3210"})).status == 200
    assert (await named.get("/api/v1/health", headers={"Host": "other.internal"})).status == 403
    # Beyond loopback any Host is answered: the token is what protects that server.
    own_db = settings.db_url.replace("vm.db", "vm-wide.db")  # one server per SQLite file
    wide = await aiohttp_client(
        create_app(dataclasses.replace(settings, listen="0.0.0.0:3210", token=SECRET, db_url=own_db))
    )
    r = await wide.get("/api/v1/templates", headers={"Host": "anything.example"})
    await expect_error(r, 401, "UNAUTHORIZED")


# ------------------------------------------------------------------ Origin (cross-site)


async def test_foreign_origins_are_refused_on_every_kind_of_request(client):
    own = f"http://127.0.0.1:{client.port}"
    evil = "https://evil.example"
    # The classic CSRF: a cross-site form posting text/plain that happens to be JSON.
    r = await client.post(
        "/api/v1/templates",
        data=b'{"name": "csrf"}',
        headers={"Origin": evil, "Content-Type": "text/plain"},
    )
    assert evil in (await expect_error(r, 403, "FORBIDDEN"))["message"]
    for method, path in (
        ("GET", "/api/v1/templates"),
        ("DELETE", "/api/v1/sessions/x"),
        ("GET", "/sessions"),
    ):
        r = await client.request(method, path, headers={"Origin": evil})
        await expect_error(r, 403, "FORBIDDEN")
    r = await client.get("/api/v1/templates", headers={"Origin": "null"})  # sandboxed frames
    await expect_error(r, 403, "FORBIDDEN")
    assert await _ws_status(client, Origin=evil) == 403
    assert await (await client.get("/api/v1/templates")).json() == []
    # The server's own pages, and programs that send no Origin, are served.
    r = await client.post("/api/v1/templates", json={"name": "mine"}, headers={"Origin": own})
    assert r.status == 201
    assert await _ws_status(client, Origin=own) == 101


async def test_allowed_origins_are_served(aiohttp_client, settings):
    c = await aiohttp_client(
        create_app(dataclasses.replace(settings, allowed_origins=("http://ok.example",)))
    )
    r = await c.post("/api/v1/templates", json={"name": "x"}, headers={"Origin": "http://ok.example"})
    assert r.status == 201
    assert await _ws_status(c, Origin="http://ok.example") == 101
    assert (await c.get("/api/v1/health", headers={"Origin": "http://ko.example"})).status == 403


async def test_pages_forbid_framing_sniffing_and_inline_scripts(client):
    for path in ("/sessions", "/templates", "/static/js/api.js", "/api/v1/health"):
        r = await client.get(path)
        assert r.status == 200, path
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    # Every template's scripts are files (the policy would block an inline one).
    for page in TEMPLATES.glob("*.html"):
        html = page.read_text()  # noqa: ASYNC240 - a few small files
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag, f"{page.name} has an inline script: {tag}"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{page.name} has an inline handler"


# ------------------------------------------------------------------ tokens


async def test_the_ui_signs_in_once_and_keeps_the_token_in_a_strict_cookie(aiohttp_client, settings):
    c = await aiohttp_client(create_app(dataclasses.replace(settings, token=SECRET)))
    r = await c.get("/sessions?token=wrong", allow_redirects=False)
    await expect_error(r, 401, "UNAUTHORIZED")
    assert "Set-Cookie" not in r.headers
    r = await c.get(f"/sessions?status=ready&token={SECRET}", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/sessions?status=ready"
    cookie = r.headers["Set-Cookie"]
    assert SECRET in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    # The client's cookie jar now authenticates REST and the WebSocket, as a browser's would.
    assert (await c.get("/api/v1/templates")).status == 200
    assert await _ws_status(c) == 101
    c.session.cookie_jar.clear()
    await expect_error(await c.get("/api/v1/templates"), 401, "UNAUTHORIZED")
    assert await _ws_status(c) == 401
    assert (await c.get("/api/v1/health")).status == 200  # health needs no token
    r = await c.get("/api/v1/templates", headers={"Authorization": f"Bearer {SECRET}"})
    assert r.status == 200


async def test_tokens_never_reach_the_log(aiohttp_client, settings, caplog):
    c = await aiohttp_client(create_app(dataclasses.replace(settings, token=SECRET)))
    with caplog.at_level(logging.DEBUG):
        assert (await c.get(f"/api/v1/templates?token={SECRET}&x=1")).status == 200
        assert (await c.get(f"/api/v1/templates?TOKEN={SECRET}")).status == 401
        await c.get(f"/templates?token={SECRET}", allow_redirects=False)
        assert (await c.get("/api/v1/templates", headers={"Authorization": f"Bearer {SECRET}"})).status == 200
    lines = [r.getMessage() for r in caplog.records]
    assert any("/api/v1/templates?token=***&x=1 200" in line for line in lines), lines
    assert not any(SECRET in line for line in lines)


async def test_workers_do_not_inherit_the_servers_settings(aiohttp_client, settings, worktree, monkeypatch):
    monkeypatch.setenv("VM_SYSTEM_TOKEN", SECRET)
    monkeypatch.setenv("VM_SYSTEM_DB", "postgresql://vm:password@db/vm")
    monkeypatch.setenv("KEEP_ME", "1")
    client = await aiohttp_client(create_app(dataclasses.replace(settings, token=SECRET)))
    client.session.headers["Authorization"] = f"Bearer {SECRET}"
    s = await Api(client, worktree).session()
    proc = Path(f"/proc/{s['runtime_meta']['worker_pid']}/environ")
    environ = proc.read_bytes().split(b"\0")  # noqa: ASYNC240 - a tiny /proc file
    assert b"KEEP_ME=1" in environ
    assert not any(v.startswith(b"VM_SYSTEM_") for v in environ), environ
    assert not any(SECRET.encode() in v or b"password" in v for v in environ)


def _non_loopback_ip() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            ip = sock.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


class ServeProcess:
    """A real `vm-system serve` subprocess, its log collected in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
        cmd = [sys.executable, "-m", "server.cli", "serve", "--db", str(tmp_path / "vm.db"), *args]
        self.args = [a.replace("PORT", str(self.port)) for a in cmd]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found
            assert self.proc.poll() is None, self.log()
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} never appeared in the log:\n{self.log()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


async def test_serving_beyond_loopback_generates_a_token_and_prints_the_url(tmp_path):
    ip = _non_loopback_ip()
    server = ServeProcess(tmp_path, "--listen", "0.0.0.0:PORT")
    try:
        found = server.wait_for_log(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]+)")
        assert int(found.group(1)) == server.port
        token = found.group(2)
        hosts = ["127.0.0.1"] + ([ip] if ip else [])
        # unsafe=True: keep cookies set by an IP address, as a browser does.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            for host in hosts:
                base = f"http://{host}:{server.port}"
                r = await http.get(f"{base}/api/v1/templates")
                await expect_error(r, 401, "UNAUTHORIZED")
                # The printed URL signs the browser in and lands on the UI without the token.
                r = await http.get(f"{base}/?token={token}")
                assert r.status == 200 and "token" not in str(r.url) and "<title>" in await r.text()
                r = await http.get(f"{base}/api/v1/templates")  # with the cookie just set
                assert r.status == 200
                async with http.ws_connect(f"{base}/api/v1/ws", headers={"Origin": base}) as ws:
                    await ws.send_json({"type": "ping", "id": 1})
                    assert (await ws.receive_json())["type"] == "pong"
                http.cookie_jar.clear()
            r = await http.get(f"http://127.0.0.1:{server.port}/api/v1/templates?token={token}")
            assert r.status == 200
        server.wait_for_log(r"GET /api/v1/templates\?token=\*\*\* 200")
    finally:
        server.stop()
    # The token appears only in the printed URLs, never in a request line.
    lines_with_token = [line for line in server.log().splitlines() if token in line]
    assert lines_with_token and all(line.strip().startswith("http://") for line in lines_with_token)


@pytest.mark.parametrize("listen", ["127.0.0.1:PORT", "0.0.0.0:PORT --no-token"])
async def test_loopback_and_no_token_servers_need_no_token(tmp_path, listen):
    listen_addr, *flags = listen.split()
    server = ServeProcess(tmp_path, "--listen", listen_addr, *flags)
    try:
        server.wait_for_log(r"listening on http://")
        async with aiohttp.ClientSession() as http:
            r = await http.get(f"http://127.0.0.1:{server.port}/api/v1/templates")
            assert r.status == 200
    finally:
        server.stop()
    assert "token=" not in server.log()
    if flags:
        assert "no token (--no-token)" in server.log()
