"""Request bodies, read after authentication so that checks run in API.md's order:
401, 403, malformed JSON (400), Idempotency-Key (400), validation (422)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from azora_payments.api.problems import field_errors
from azora_payments.api.response_headers import REPLAYS
from azora_payments.api.schemas import IDEMPOTENCY_KEY_HEADER, REF, REQUEST_MODELS
from azora_payments.errors import (
    IdempotencyKeyInvalid,
    IdempotencyKeyRequired,
    InvalidJson,
    ValidationFailed,
)

M = TypeVar("M", bound=BaseModel)
# No body of ours nests anywhere near this; deeper is an attack on the parser (a RecursionError,
# a 500) or on everything that walks the value afterwards (fingerprints, validation).
MAX_JSON_DEPTH = 64


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidJson() from None
    if json_depth_exceeds(data, MAX_JSON_DEPTH):
        raise InvalidJson(f"JSON may nest at most {MAX_JSON_DEPTH} levels.")
    return data


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest deeper than `limit` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ValidationFailed(
            "Some fields are not valid.", errors=field_errors(exc.errors())
        ) from None


def idempotency_key(request: Request) -> str:
    """The caller's Idempotency-Key: 1 to 255 printable ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        raise IdempotencyKeyRequired()
    if not 1 <= len(key) <= 255 or not all(0x20 <= ord(ch) <= 0x7E for ch in key):
        raise IdempotencyKeyInvalid()
    return key


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a body that the route reads itself: a reference to the model
    among the schema's components (its own `$defs` would point nowhere from inside a path)."""
    REQUEST_MODELS[model.__name__] = model
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    }


def replaying_body(model: type[BaseModel], *, key_header: bool = True) -> dict[str, Any]:
    """`openapi_extra` of a route that stores its answers and replays them: its body, the
    `Idempotency-Key` header it requires (unless it keys its requests itself, as the checkout
    page's pay does), and the mark that documents `Idempotent-Replayed`."""
    extra: dict[str, Any] = {**body_schema(model), REPLAYS: True}
    if key_header:
        extra["parameters"] = [IDEMPOTENCY_KEY_HEADER]
    return extra
