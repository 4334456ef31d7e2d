"""Strict request-body decoding: JSON object, no duplicate keys, no trailing bytes, typed fields."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from server import errors
from server.core.params import check_json_value
from server.core.schemas import NUL_CHECKED_BY_SERVICE

M = TypeVar("M", bound=BaseModel)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _number(literal: str) -> float | int:
    """A JSON number with a fraction or exponent: an int when its value is whole (``10.0``).

    JSON (and JSON Schema) have one number type; ``10.0`` is the integer 10 to every client.
    """
    value = Decimal(literal)
    if value.is_finite() and value.adjusted() < 64 and value == value.to_integral_value():
        return int(value)
    return float(literal)  # fractional, or too large for any integer field anyway


def parse_json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a dict; None for a literal ``null``. Raises INVALID_REQUEST otherwise."""
    if not raw.strip():
        raise errors.InvalidRequest("request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidRequest("request body is not valid UTF-8") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_number
        )
    except _DuplicateKey as exc:
        check_json_value(exc.args[0], what="request body's keys")
        raise errors.InvalidRequest(f"duplicate key {exc.args[0]!r} in request body") from None
    except RecursionError:
        raise errors.InvalidRequest("request body is nested too deeply") from None
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith("Extra data"):
            raise errors.InvalidRequest("request body has trailing data after the JSON value") from None
        raise errors.InvalidRequest(f"request body is not valid JSON: {msg}") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise errors.InvalidRequest(f"request body must be a JSON object, got {type(value).__name__}")
    return value


def decode_body(raw: bytes, model: type[M], **details: Any) -> M:
    """Decode ``raw`` into ``model`` with the error codes of API.md section 1."""
    data = parse_json_object(raw)
    if data is None:
        raise errors.ValidationError("request body must not be null; send a JSON object", **details)
    return validate_fields(data, model, **details)


def _must_not_be_empty(info: Any) -> bool:
    """A required string is non-empty unless its schema allows "" (a completion's input)."""
    extra = info.json_schema_extra
    return not (isinstance(extra, dict) and extra.get("minLength") == 0)


def validate_fields(data: dict[str, Any], model: type[M], **details: Any) -> M:
    """Check a decoded object against ``model`` (REST bodies and WebSocket messages alike)."""
    check_json_value(data, nul_checked_by_service=NUL_CHECKED_BY_SERVICE)
    fields = model.model_fields
    for key in data:
        if key not in fields:
            allowed = ", ".join(fields)
            raise errors.InvalidRequest(
                f"unknown field {key!r} in request body (allowed: {allowed})", field=key, **details
            )
    # null for an optional field means "use the default".
    data = {k: v for k, v in data.items() if v is not None or fields[k].is_required()}
    # Only "" counts as empty here: a blank value ("  ") reaches the service, which answers
    # with the specific code (INVALID_PATH for a startup path, MODULE_NOT_ALLOWED for a module).
    for name, info in fields.items():
        if info.is_required():
            value = data.get(name)
            if value is None or (value == "" and _must_not_be_empty(info)):
                raise errors.ValidationError(f"{name} is required", field=name, **details)
    try:
        return model.model_validate(data)
    except PydanticError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise errors.InvalidRequest(
                f"unknown field {loc!r} in request body", field=loc, **details
            ) from None
        if first["type"] in ("greater_than_equal", "less_than_equal", "missing"):
            raise errors.ValidationError(f"{loc}: {first['msg']}", field=loc, **details) from None
        raise errors.InvalidRequest(
            f"field {loc!r} has the wrong type: {first['msg'].lower()}", field=loc, **details
        ) from None
