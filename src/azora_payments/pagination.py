"""Opaque keyset cursors: `(created_at, id)` of the last row of a page, newest first."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import TypeVar

from azora_payments.errors import InvalidCursor

_VERSION = "k1"
T = TypeVar("T", str, int)


def encode_cursor(at: datetime, row_id: str | int) -> str:
    raw = json.dumps([_VERSION, at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, id_type: type[T]) -> tuple[datetime, T]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        # validate: characters outside the alphabet are an error, not silently dropped.
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        version, at, row_id = json.loads(raw)
        if version != _VERSION or not isinstance(row_id, id_type) or isinstance(row_id, bool):
            raise ValueError(cursor)
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError(cursor)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursor() from exc
    return moment, row_id
