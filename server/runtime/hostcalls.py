"""What the native modules share: the JavaScript error they throw and how values cross to JS."""

from __future__ import annotations

import json
import math
from typing import Any


class JsError(Exception):
    """An error to hand back to JavaScript as `{"error": {"name", "message"}}`."""

    def __init__(self, message: str, name: str = "Error") -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def type_error(message: str) -> JsError:
    return JsError(message, "TypeError")


def js_type(value: Any) -> str:
    """How JavaScript would describe ``value`` in an argument error ("a string", "null"...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def jsonable(value: Any) -> Any:
    """Make a Python value JSON-safe the way JSON.stringify would (non-finite floats → null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        # BLOBs come back as arrays of byte values, like Array.from(new Uint8Array(blob)).
        return list(bytes(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def error_json(name: str, message: str) -> str:
    return json.dumps({"error": {"name": name, "message": message}}, ensure_ascii=False)
