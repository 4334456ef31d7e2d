"""What the REST and WebSocket clients share: the error type, the statuses, small helpers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from server.errors import status_by_code

# Statuses of the error codes (API.md section 2), to give WebSocket errors the REST status too.
_CODE_STATUS = status_by_code()

# Terminal statuses of an execution (API.md section 4).
ENDED_STATUSES = frozenset({"ok", "error", "timeout", "cancelled"})

# WebSocket replies that say how a request is going without ending it (API.md §12).
INTERIM_REPLIES = frozenset({"queued"})


class ApiError(Exception):
    """A failed API call: the HTTP status (0 when no answer), the error code and message."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    @classmethod
    def from_envelope(cls, status: int, error: Any) -> ApiError:
        """Build from the `error` object of an envelope (REST body or WebSocket message)."""
        if not isinstance(error, Mapping):
            return cls(status, f"HTTP_{status}", f"malformed error: {error!r}")
        code = str(error.get("code") or f"HTTP_{status}")
        if not status:
            status = _CODE_STATUS.get(code, 0)
        details = error.get("details")
        return cls(
            status,
            code,
            str(error.get("message") or code),
            details if isinstance(details, Mapping) else None,
        )


def _error_from_response(status: int, body: Any, text: str, reason: str | None) -> ApiError:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return ApiError.from_envelope(status, body["error"])
    if body is not None:
        shown = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    else:
        shown = text.strip() or (reason or "")
    if len(shown) > 300:
        shown = shown[:300] + "..."
    message = f"the server answered HTTP {status}" + (f": {shown}" if shown else "")
    return ApiError(status, f"HTTP_{status}", message)


def _describe(exc: BaseException) -> str:
    """A short reason for a connection failure, without aiohttp's wrapping."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError):
        return os_error.strerror or str(os_error)
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _seg(value: str) -> str:
    """One path segment, percent-encoded so any id or name stays a single segment."""
    return quote(str(value), safe="")


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _ClosesOnExit:
    """`async with` for the clients below: leaving the block calls their `close()`."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
