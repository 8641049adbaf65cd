"""One plain e-mail address (`name@domain`, ASCII, no display name, no list): the only kind of
address a receipt or a refund notice is ever sent to."""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address

__all__ = ["InvalidAddress", "plain_address", "plain_address_or_none"]

# RFC 5322 dot-atom: no quotes, no comments, no spaces, no commas, no angle brackets.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# A host name (international ones in their xn-- form), with at least one dot.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class InvalidAddress(ValueError):
    """Not exactly one plain address."""


def plain_address(value: str) -> str:
    """`value` itself when it is one plain address, else `InvalidAddress`."""
    local, at, domain = value.rpartition("@")
    labels = domain.split(".")
    if (
        len(value) > 254
        or not at
        or len(local) > 64
        or not _LOCAL.fullmatch(local)
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise InvalidAddress("must be one plain address (name@domain)")
    # And the e-mail package, which builds the headers, must read back this one address.
    try:
        parsed = Address(addr_spec=value)
    except (HeaderParseError, ValueError, IndexError):  # pragma: no cover - the rules above
        raise InvalidAddress("must be one plain address (name@domain)") from None
    if parsed.addr_spec != value:  # pragma: no cover - the rules above keep them equal
        raise InvalidAddress("must be one plain address (name@domain)")
    return value


def plain_address_or_none(value: str | None) -> str | None:
    """For addresses we did not choose (a token's `email` claim, a row written before the rule):
    usable, or nothing."""
    if value is None:
        return None
    try:
        return plain_address(value)
    except InvalidAddress:
        return None
