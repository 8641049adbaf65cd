"""What an idempotent flow ends with, in the domain's words: no status code, no problem body.

`api/answers.py` renders each outcome as the HTTP answer (status and JSON text); the idempotency
layer stores that rendering with the key, in the transaction of the phase that ends the flow,
and replays it byte for byte. A flow returns an `Answer`: the outcome and its stored rendering,
or (a replay) only what was stored.

    payments   Charged · UnderWay · Declined · Rejected · PaymentGivenUp
    refunds    Refunded · TooMuch · RefundRefused
    checkout   SessionCreated
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azora_payments.domain.idempotency import Stored


@dataclass(frozen=True, slots=True)
class Charged:
    """The payment was made (or is under way at Stripe: 3-D Secure, processing): its view."""

    payment: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UnderWay:
    """A checkout attempt still unsettled whose key is gone: the payment as it stands."""

    payment: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Declined:
    """The card was declined; the failure as the customer is told it (`declines.public_failure`)."""

    payment_id: str
    code: str | None
    decline_code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Stripe refused the payment as invalid before charging: on `field` (`amount`,
    `payment_method_id`), or, `field` None, because the payment method does not exist."""

    payment_id: str
    field: str | None
    message: str


@dataclass(frozen=True, slots=True)
class PaymentGivenUp:
    """The payment failed or was canceled for good: never charged again under this key."""

    payment_id: str
    failure: Any


@dataclass(frozen=True, slots=True)
class Refunded:
    """The refund was made at Stripe (or is pending there): its view."""

    refund: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TooMuch:
    """Less than asked remains refundable (`remaining`, never below zero)."""

    payment_id: str
    remaining: int


@dataclass(frozen=True, slots=True)
class RefundRefused:
    """Stripe refused the refund: its code (`charge_disputed`, …), or ours when it had none."""

    payment_id: str
    code: str


@dataclass(frozen=True, slots=True)
class SessionCreated:
    """A checkout session was created: its view."""

    session: dict[str, Any]


Outcome = (
    Charged
    | UnderWay
    | Declined
    | Rejected
    | PaymentGivenUp
    | Refunded
    | TooMuch
    | RefundRefused
    | SessionCreated
)
# Renders an outcome as the answer stored and sent (api/answers.py).
Renderer = Callable[[Outcome], Stored]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a flow ends with: its outcome and the answer stored for it; a replay has only the
    stored answer (`outcome` None)."""

    stored: Stored
    outcome: Outcome | None = None

    @property
    def replayed(self) -> bool:
        return self.outcome is None
