"""Request arguments, one rule each: ids, integer cursors, message fields, and what a string may hold.

Every transport (REST paths and queries, WebSocket messages, UI page paths) parses its arguments
here, so a value is accepted or refused the same way whichever door it came through.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from server import errors

MAX_CURSOR = 2**63 - 1  # event ids and seqs are 64-bit signed integers in both stores
MAX_JSON_DEPTH = 64  # far past any real settings or args; well under orjson's 255 when stored
JS_SAFE_INT = 2**53 - 1  # request integers travel to JavaScript: keep them exact there
_DECIMAL = re.compile(r"[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_uuid(value: Any, kind: str) -> str:
    """An id in any form ``uuid.UUID`` reads, lowercased; else 400 naming ``<kind>_id``."""
    try:
        return str(uuid.UUID(value.strip()))
    except (ValueError, AttributeError, TypeError):
        raise errors.ValidationError(
            f"{kind}_id must be a valid UUID", **{f"{kind}_id": printable(value)}
        ) from None


def is_uuid(value: str) -> bool:
    try:
        parse_uuid(value, "any")
    except errors.ValidationError:
        return False
    return True


def parse_int(raw: str | None, name: str, *, default: int, lo: int, hi: int | None) -> int:
    """A query-string integer: plain ASCII digits only, within [lo, hi] (hi None: a cursor)."""
    if raw is None or raw == "":
        return default
    if not _DECIMAL.fullmatch(raw):
        raise errors.ValidationError(f"{name} must be a non-negative integer, got {printable(raw)!r}")
    return _bounded(int(raw), name, lo, hi)


def _bounded(value: int, name: str, lo: int, hi: int | None) -> int:
    top = MAX_CURSOR if hi is None else hi
    if value < lo or value > top:
        raise errors.ValidationError(f"{name} must be between {lo} and {top}, got {value}")
    return value


def message_str(msg: dict[str, Any], key: str) -> str:
    """A required, non-blank string field of a WebSocket message."""
    value = msg.get(key)
    if not isinstance(value, str) or not value.strip():
        raise errors.ValidationError(f"{key} is required and must be a string", field=key)
    return value


def message_cursor(msg: dict[str, Any], key: str) -> int | None:
    """An optional cursor field of a WebSocket message, with the REST bounds (None when absent)."""
    value = msg.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 5.0 is the integer 5, as in REST bodies
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.ValidationError(f"{key} must be a non-negative integer", field=key)
    return _bounded(value, key, 0, None)


def printable(value: Any) -> Any:
    """``value`` safe to echo in an error (lone surrogates cannot be encoded as UTF-8 JSON)."""
    if isinstance(value, str) and _SURROGATE.search(value):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def check_json_value(
    value: Any, *, what: str = "request body", nul_checked_by_service: frozenset[str] = frozenset()
) -> None:
    """Refuse what no store or JavaScript can hold, naming the field.

    Lone UTF-16 surrogates (``"\\ud800"``) in any string or key, nesting deeper than
    ``MAX_JSON_DEPTH``, integers JavaScript cannot represent exactly and floats that are not
    finite (``1e999``) are INVALID_REQUEST; a NUL character (which PostgreSQL cannot store and
    QuickJS would cut a string at) is VALIDATION_ERROR, except in the top-level fields listed in
    ``nul_checked_by_service``, whose service answers it with a more specific code (a path's
    INVALID_PATH).
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, path or "value", what, nul=path not in nul_checked_by_service)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > JS_SAFE_INT:
                raise errors.InvalidRequest(
                    f"field {path or 'value'!r} in the {what} is an integer outside ±(2^53-1), "
                    "which JavaScript cannot represent exactly; send it as a string",
                    field=path,
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise errors.InvalidRequest(
                    f"field {path or 'value'!r} in the {what} is not a finite number", field=path
                )
            if item.is_integer() and abs(item) > JS_SAFE_INT:
                raise errors.InvalidRequest(
                    f"field {path or 'value'!r} in the {what} is an integer outside ±(2^53-1), "
                    "which JavaScript cannot represent exactly; send it as a string",
                    field=path,
                )
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise errors.InvalidRequest(
                    f"the {what} is nested deeper than {MAX_JSON_DEPTH} levels at {path!r}", field=path
                )
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, sub in pairs:
                sub_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str):
                    _check_text(key, sub_path, what, key=True)
                stack.append((sub, sub_path, depth + 1))


def _check_text(text: str, path: str, what: str, *, key: bool = False, nul: bool = True) -> None:
    thing = "key" if key else "field"
    if nul and "\x00" in text:
        raise errors.ValidationError(
            f"{thing} {printable(path)!r} in the {what} contains a NUL character, which is not allowed",
            field=printable(path),
        )
    if _SURROGATE.search(text):
        raise errors.InvalidRequest(
            f"{thing} {printable(path)!r} in the {what} contains a lone UTF-16 surrogate "
            "(an unpaired \\ud800-\\udfff escape), which is not valid Unicode text",
            field=printable(path),
        )
