"""Opaque keyset cursors: a round trip gives back the position; anything else is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from azora_payments.errors import InvalidCursor
from azora_payments.pagination import decode_cursor, encode_cursor

AT = datetime(2026, 11, 26, 23, 4, 5, 123456, tzinfo=UTC)


def forge(payload: object) -> str:
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("row_id", [1, 2**53, "pay_01jb3k5x0000000000000000"])
def test_round_trip(row_id: int | str) -> None:
    cursor = encode_cursor(AT, row_id)
    assert "=" not in cursor  # URL-safe, no padding to escape
    assert decode_cursor(cursor, type(row_id)) == (AT, row_id)


def test_round_trip_keeps_the_offset() -> None:
    at = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    moment, row_id = decode_cursor(encode_cursor(at, 7), int)
    assert moment == at
    assert moment.utcoffset() == timedelta(hours=2)
    assert row_id == 7


def test_cursors_order_like_their_rows() -> None:
    """The keyset query compares a cursor's position with rows': decoded positions must sort
    exactly as the rows they came from, to the microsecond, whatever offset a moment carries."""
    plus_two = timezone(timedelta(hours=2))
    rows = [
        (AT, 2),
        (AT, 1),
        (AT + timedelta(microseconds=1), 1),
        (AT - timedelta(microseconds=1), 9),
        # The same instant as AT, written at +02:00; then one an hour later than AT in UTC.
        (AT.astimezone(plus_two), 3),
        (AT.astimezone(plus_two) + timedelta(hours=1), 0),
        (AT - timedelta(days=400), 2**53),
    ]
    positions = [decode_cursor(encode_cursor(at, row_id), int) for at, row_id in rows]
    order = sorted(range(len(rows)), key=lambda i: rows[i], reverse=True)
    assert sorted(range(len(rows)), key=lambda i: positions[i], reverse=True) == order
    for (at, row_id), (moment, decoded_id) in zip(rows, positions, strict=True):
        assert (moment, decoded_id) == (at, row_id)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage!",
        "%%%%",
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
        forge(["k1", AT.isoformat()]),
        forge(["k1", AT.isoformat(), 1, 2]),
        forge(["k2", AT.isoformat(), 1]),
        forge(["k1", "yesterday", 1]),
        forge(["k1", 1764198245, 1]),
        forge(["k1", "2026-11-26T23:04:05", 1]),  # naive: not one of ours
        forge(["k1", AT.isoformat(), True]),
        forge(["k1", AT.isoformat(), "pay_1"]),  # a history cursor given to the audit log
        forge(["k1", AT.isoformat(), 1.5]),
        forge({"v": "k1", "at": AT.isoformat(), "id": 1}),
        forge(42),
        forge(None),
    ],
)
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as info:
        decode_cursor(cursor, int)
    assert info.value.status == 400
    assert info.value.code == "invalid_cursor"


@pytest.mark.parametrize("junk", ["!", " ", "*", "."])
def test_a_cursor_with_foreign_characters_is_refused(junk: str) -> None:
    cursor = encode_cursor(AT, 5)
    with pytest.raises(InvalidCursor):
        # Four at a time, so that the padding stays right and only the alphabet is at stake.
        decode_cursor(cursor[:4] + junk * 4 + cursor[4:], int)


def test_an_audit_cursor_is_not_a_history_cursor() -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(encode_cursor(AT, 5), str)
