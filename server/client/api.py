"""Async REST client for the vm-system API, used by the CLI, benchmarks and tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from server.client.base import (
    ENDED_STATUSES,
    ApiError,
    _ClosesOnExit,
    _describe,
    _drop_none,
    _error_from_response,
    _seg,
)
from server.client.socket import VmSocket


class VmClient(_ClosesOnExit):
    """REST client: one method per endpoint of API.md section 3, returning the parsed JSON."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._session = session
        self._owns_session = session is None

    # -- plumbing ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No total timeout: a waiting execution may legitimately run for a long time.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", **self._auth_headers()}

    def _unreachable(self, reason: str) -> ApiError:
        return ApiError(0, "UNREACHABLE", f"cannot reach the server at {self.base_url}: {reason}")

    def _check_url(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self._unreachable(
                "the server URL must look like http://HOST:PORT (set --server-url or VM_SYSTEM_URL)"
            )

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call `/api/v1<path>` and return the parsed JSON body, or raise `ApiError`."""
        self._check_url()
        url = f"{self.base_url}/api/v1{path}"
        headers = self._headers()
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        query = {k: str(v) for k, v in _drop_none(params or {}).items()}
        try:
            async with self._http().request(
                method, url, data=data, params=query or None, headers=headers
            ) as resp:
                raw = await resp.read()
                status, reason = resp.status, resp.reason
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise self._unreachable(_describe(exc)) from exc
        text = raw.decode("utf-8", errors="replace")
        parsed: Any = None
        if text.strip():
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        if 200 <= status < 300:
            if parsed is None and text.strip():
                raise ApiError(
                    status,
                    "INVALID_RESPONSE",
                    f"the server at {self.base_url} answered with a body that is not JSON; "
                    f"check that --server-url points at vm-system",
                )
            return parsed
        raise _error_from_response(status, parsed, text, reason)

    # -- operations -------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/health")

    async def runtime_summary(self) -> dict[str, Any]:
        return await self.request("GET", "/runtime/summary")

    async def list_modules(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/modules")

    async def list_libraries(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/libraries")

    async def openapi(self) -> dict[str, Any]:
        return await self.request("GET", "/openapi.json")

    # -- templates --------------------------------------------------------------------------

    async def list_templates(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/templates")

    async def create_template(self, name: str, *, engine: str | None = None) -> dict[str, Any]:
        return await self.request("POST", "/templates", body=_drop_none({"name": name, "engine": engine}))

    async def get_template(self, template_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/templates/{_seg(template_id)}")

    async def update_template(
        self,
        template_id: str,
        *,
        name: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """PATCH: `settings` is `{limits?, resolver?, runtime?}`, each merged key by key."""
        body = _drop_none({"name": name, "settings": dict(settings) if settings else None})
        return await self.request("PATCH", f"/templates/{_seg(template_id)}", body=body)

    async def delete_template(self, template_id: str) -> dict[str, Any]:
        return await self.request("DELETE", f"/templates/{_seg(template_id)}")

    async def list_capabilities(self, template_id: str) -> list[dict[str, Any]]:
        return await self.request("GET", f"/templates/{_seg(template_id)}/capabilities")

    async def add_capability(
        self,
        template_id: str,
        *,
        kind: str,
        name: str,
        enabled: bool | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = _drop_none(
            {
                "kind": kind,
                "name": name,
                "enabled": enabled,
                "config": dict(config) if config is not None else None,
            }
        )
        return await self.request("POST", f"/templates/{_seg(template_id)}/capabilities", body=body)

    async def delete_capability(self, template_id: str, capability_id: str) -> dict[str, Any]:
        return await self.request(
            "DELETE",
            f"/templates/{_seg(template_id)}/capabilities/{_seg(capability_id)}",
        )

    async def list_startup_files(self, template_id: str) -> list[dict[str, Any]]:
        return await self.request("GET", f"/templates/{_seg(template_id)}/startup-files")

    async def add_startup_file(
        self,
        template_id: str,
        path: str,
        *,
        order_index: int | None = None,
        mode: str | None = None,
    ) -> dict[str, Any]:
        body = _drop_none({"path": path, "order_index": order_index, "mode": mode})
        return await self.request("POST", f"/templates/{_seg(template_id)}/startup-files", body=body)

    async def delete_startup_file(self, template_id: str, startup_file_id: str) -> dict[str, Any]:
        return await self.request(
            "DELETE",
            f"/templates/{_seg(template_id)}/startup-files/{_seg(startup_file_id)}",
        )

    async def list_template_modules(self, template_id: str) -> list[str]:
        return await self.request("GET", f"/templates/{_seg(template_id)}/modules")

    async def add_template_module(self, template_id: str, name: str) -> dict[str, Any]:
        return await self.request("POST", f"/templates/{_seg(template_id)}/modules", body={"name": name})

    async def remove_template_module(self, template_id: str, name: str) -> dict[str, Any]:
        return await self.request("DELETE", f"/templates/{_seg(template_id)}/modules/{_seg(name)}")

    async def list_template_libraries(self, template_id: str) -> list[str]:
        return await self.request("GET", f"/templates/{_seg(template_id)}/libraries")

    async def add_template_library(self, template_id: str, name: str) -> dict[str, Any]:
        return await self.request("POST", f"/templates/{_seg(template_id)}/libraries", body={"name": name})

    async def remove_template_library(self, template_id: str, name: str) -> dict[str, Any]:
        return await self.request("DELETE", f"/templates/{_seg(template_id)}/libraries/{_seg(name)}")

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(
        self,
        *,
        template_id: str,
        workspace_id: str,
        base_commit_oid: str,
        worktree_path: str,
    ) -> dict[str, Any]:
        body = {
            "template_id": template_id,
            "workspace_id": workspace_id,
            "base_commit_oid": base_commit_oid,
            "worktree_path": worktree_path,
        }
        return await self.request("POST", "/sessions", body=body)

    async def list_sessions(
        self, *, status: str | None = None, template_id: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"status": status, "template_id": template_id}
        return await self.request("GET", "/sessions", params=params)

    async def get_session(self, session_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/sessions/{_seg(session_id)}")

    async def close_session(self, session_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/sessions/{_seg(session_id)}/close")

    async def delete_session(self, session_id: str) -> dict[str, Any]:
        return await self.request("DELETE", f"/sessions/{_seg(session_id)}")

    async def fork_session(self, session_id: str, **fields: str | None) -> dict[str, Any]:
        """Fork a live session (API.md §11); `fields`: worktree_path, workspace_id, base_commit_oid."""
        return await self.request("POST", f"/sessions/{_seg(session_id)}/fork", body=_drop_none(fields))

    async def complete(self, session_id: str, input: str, cursor: int | None = None) -> dict[str, Any]:
        """Completions at `cursor` (API.md §12): `{from, to, candidates: [{name, kind}]}`."""
        body = _drop_none({"input": input, "cursor": cursor})
        return await self.request("POST", f"/sessions/{_seg(session_id)}/complete", body=body)

    # -- executions -------------------------------------------------------------------------

    async def list_executions(
        self, session_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``before``: only those older than that execution (the next page)."""
        params = {"session_id": session_id, "limit": limit, "before": before}
        return await self.request("GET", "/executions", params=params)

    async def get_execution(self, execution_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/executions/{_seg(execution_id)}")

    async def get_events(
        self,
        execution_id: str,
        *,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        params = {"after_seq": after_seq, "limit": limit}
        return await self.request("GET", f"/executions/{_seg(execution_id)}/events", params=params)

    async def repl(
        self,
        session_id: str,
        input: str,
        *,
        wait: bool = True,
        timers: str | None = None,
        queue: bool | None = None,
    ) -> dict[str, Any]:
        """Run REPL input; with `wait` the Execution comes back ended, with its `events`.

        `timers` ("wait" or "background") and `queue` as in API.md §12; None sends nothing.
        """
        body = {"session_id": session_id, "input": input, "wait": wait}
        return await self.request(
            "POST", "/executions/repl", body={**body, **_drop_none({"timers": timers, "queue": queue})}
        )

    async def run_file(
        self,
        session_id: str,
        path: str,
        *,
        args: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        queue: bool | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"session_id": session_id, "path": path, "wait": wait}
        if queue is not None:
            body["queue"] = queue
        if args is not None:
            body["args"] = dict(args)
        if env is not None:
            body["env"] = dict(env)
        return await self.request("POST", "/executions/run-file", body=body)

    async def cancel_execution(self, execution_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/executions/{_seg(execution_id)}/cancel")

    # -- WebSocket --------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/api/v1/ws", "", ""))

    async def connect_ws(self) -> VmSocket:
        """Open `/api/v1/ws`. A missing endpoint raises `ApiError(404, "NOT_FOUND", ...)`."""
        self._check_url()
        try:
            ws = await self._http().ws_connect(
                self.ws_url, headers=self._auth_headers(), max_msg_size=64 * 1024 * 1024, heartbeat=30.0
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:
                raise ApiError(
                    404, "NOT_FOUND", f"the server has no WebSocket endpoint at {self.ws_url}"
                ) from exc
            if exc.status == 401:
                raise ApiError(401, "UNAUTHORIZED", "the server refused the token (set --token)") from exc
            raise ApiError(
                exc.status,
                f"HTTP_{exc.status}",
                f"the server refused the WebSocket connection: {exc.message}",
            ) from exc
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise self._unreachable(_describe(exc)) from exc
        return VmSocket(ws)

    async def follow_execution(
        self,
        execution_id: str,
        after_seq: int = 0,
        *,
        max_retries: int = 6,
        poll_interval: float = 0.25,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the execution's events with `seq > after_seq`, then its final record.

        Events carry `seq`; the last item is the Execution (no `seq`). Streams over the
        WebSocket and resumes from the last seen `seq` after a disconnect (reconnecting with
        backoff, giving up after `max_retries` failures in a row); polls `/events` over REST
        when the server has no WebSocket endpoint.
        """
        cursor = after_seq
        failures = 0
        while True:
            try:
                sock = await self.connect_ws()
            except ApiError as exc:
                if exc.status == 404:
                    async for item in self._poll_execution(execution_id, cursor, poll_interval):
                        yield item
                    return
                if exc.code != "UNREACHABLE" or failures >= max_retries:
                    raise
                failures += 1
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            final: dict[str, Any] | None = None
            async with sock:
                try:
                    reply = await sock.request(
                        {"type": "subscribe", "execution_id": execution_id, "after_seq": cursor}
                    )
                    async for item in sock.follow(reply.get("subscription"), after_seq=cursor):
                        failures = 0  # progress: a later drop starts the backoff afresh
                        if "seq" in item:
                            cursor = max(cursor, int(item["seq"]))
                            yield item
                        else:
                            final = item
                except ApiError as exc:
                    if exc.code != "DISCONNECTED":
                        raise
                else:
                    yield final or await self.get_execution(execution_id)
                    return
            # The socket closed before `complete`: resume from the cursor.
            failures += 1
            if failures > max_retries:
                raise ApiError(
                    0,
                    "DISCONNECTED",
                    f"lost the WebSocket connection to {self.base_url} {failures} times in a row "
                    f"while following execution {execution_id}",
                )
            await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    async def _poll_execution(
        self, execution_id: str, cursor: int, interval: float
    ) -> AsyncIterator[dict[str, Any]]:
        """REST fallback of `follow_execution`: page through `/events` until the end."""
        delay = interval
        while True:
            execution = await self.get_execution(execution_id)
            ended = execution.get("status") in ENDED_STATUSES
            # Drain everything stored so far; once ended, every event is stored.
            while True:
                page = await self.get_events(execution_id, after_seq=cursor, limit=1000)
                for event in page:
                    cursor = max(cursor, int(event.get("seq", cursor)))
                    yield event
                if len(page) < 1000:
                    break
                delay = interval
            if ended:
                yield execution
                return
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)
