"""Wall-clock timestamps in the one format the API uses: RFC 3339, UTC, microseconds, ``Z``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_cache_sec = -1
_cache_prefix = ""


def now_iso() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (cheap: cached per second)."""
    global _cache_sec, _cache_prefix
    now = time.time_ns() // 1000
    sec, usec = divmod(now, 1_000_000)
    if sec != _cache_sec:
        _cache_prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _cache_sec = sec
    return f"{_cache_prefix}{usec:06d}Z"


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
