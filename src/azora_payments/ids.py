"""Our own opaque, prefixed ids (`pay_…`, `rf_…`, `rcpt_…`), sortable by creation time.

A millisecond timestamp followed by 80 random bits, in Crockford base32 (the ULID layout): new
rows land at the end of primary-key indexes, and ids never collide across servers.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_base32(millis, 10)}{_base32(secrets.randbits(80), 16)}"


def new_secret_id(prefix: str, *, random_bits: int = 160) -> str:
    """An id that is also a credential (a checkout session's): random bits only, no timestamp."""
    return f"{prefix}_{_base32(secrets.randbits(random_bits), -(-random_bits // 5))}"
