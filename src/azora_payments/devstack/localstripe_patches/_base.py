"""What every patch shares: Stripe-shaped errors, events, "later", the test cards and the
declines they stand for (gap e's table), and the emulator's settings.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localstripe import resources as R
from localstripe.errors import UserError

log = logging.getLogger("azora_payments.devstack")

# (request id, idempotency key) of the API request being served, stamped on events as
# Stripe's `event.request`; set by the emulator's outermost middleware.
REQUEST_CONTEXT: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "azora_request", default=(None, None)
)


@dataclass
class Settings:
    webhook_delay: float = 1.0
    # Stripe's search index lags writes ("typically within a minute"): an object younger than
    # this is not found by search yet (0: found at once). Set through `POST /_azora/search`.
    search_lag: float = 0.0


SETTINGS = Settings()


class StripeError(UserError):  # type: ignore[misc]
    """A UserError whose body is exactly Stripe's ``{"error": {...}}`` (any ``type``)."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(status)
        self.body = {"error": error}


def invalid(message: str, *, code: str | None = None, param: str | None = None) -> StripeError:
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param is not None:
        error["param"] = param
    return StripeError(400, error)


def emit(event_type: str, obj: Any) -> None:
    R.schedule_webhook(R.Event(event_type, obj))


def later(callback: Callable[[], None]) -> None:
    """Run a state change "some time later" (after the webhook delay), outside any request."""
    loop = asyncio.get_running_loop()
    loop.call_later(SETTINGS.webhook_delay, callback, context=contextvars.Context())


# ------------------------------------------------------------------ test cards

CARD_BRANDS = (("34", "amex"), ("37", "amex"), ("6011", "discover"), ("5", "mastercard"))
TEST_PAYMENT_METHODS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_visa_debit": "4000056655665556",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_discover": "6011111111111117",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_visa_chargeDeclined": "4000000000000002",
    "pm_card_chargeCustomerFail": "4000000000000341",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_visa_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedLostCard": "4000000000009987",
    "pm_card_visa_chargeDeclinedLostCard": "4000000000009987",
    "pm_card_chargeDeclinedStolenCard": "4000000000009979",
    "pm_card_visa_chargeDeclinedStolenCard": "4000000000009979",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeDeclinedIncorrectCvc": "4000000000000127",
    "pm_card_chargeDeclinedProcessingError": "4000000000000119",
    "pm_card_authenticationRequired": "4000002500003155",
    "pm_card_threeDSecure2Required": "4000000000003220",
    "pm_card_threeDSecureRequired": "4000000000003063",
    "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds": "4000008260003178",
    "pm_card_createDispute": "4000000000000259",
    "pm_card_refundFail": "4000000000005126",
    "pm_card_radarBlock": "4100000000000019",
    "pm_card_visa_chargeDeclinedVelocityLimitExceeded": "4000000000006975",
}
GENERIC_DECLINE = "Your card was declined."
# card number -> (code, decline_code, message), as Stripe words them at charge time
DECLINES: dict[str, tuple[str, str, str]] = {
    "4000000000000002": ("card_declined", "generic_decline", GENERIC_DECLINE),
    "4000000000000341": ("card_declined", "generic_decline", GENERIC_DECLINE),
    "4000000000009995": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "4000000000009987": ("card_declined", "lost_card", GENERIC_DECLINE),
    "4000000000009979": ("card_declined", "stolen_card", GENERIC_DECLINE),
    "4000000000000069": ("expired_card", "expired_card", "Your card has expired."),
    "4000000000000127": (
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
    "4000000000000119": (
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    "4000008260003178": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "4000008400001629": ("card_declined", "generic_decline", GENERIC_DECLINE),
    # Radar's "always blocked" card.
    "4100000000000019": ("card_declined", "fraudulent", GENERIC_DECLINE),
    "4000000000006975": ("card_declined", "card_velocity_exceeded", GENERIC_DECLINE),
}


@dataclass
class DeclineRule:
    """A decline on demand (``POST /_azora/declines``): the next ``times`` charges of ``card``
    (a card number; any card when None) are declined with these codes."""

    decline_code: str
    code: str = "card_declined"
    message: str = GENERIC_DECLINE
    card: str | None = None
    times: int = 1

    def matches(self, number: str | None) -> bool:
        return self.card is None or self.card == number


DECLINE_RULES: list[DeclineRule] = []


def take_decline_rule(number: str | None) -> DeclineRule | None:
    for rule in DECLINE_RULES:
        if rule.matches(number):
            rule.times -= 1
            if rule.times <= 0:
                DECLINE_RULES.remove(rule)
            return rule
    return None


DECLINE_PARAMS = {"expired_card": "exp_month", "incorrect_cvc": "cvc"}
DISPUTE_CARD = "4000000000000259"
REFUND_FAIL_CARD = "4000000000005126"


def card_number(payment_method_id: str | None) -> str | None:
    if not payment_method_id:
        return None
    pm = R.store.get("payment_method:" + payment_method_id)
    return getattr(pm, "_card_number", None)


def brand_of(number: str) -> str:
    return next((brand for prefix, brand in CARD_BRANDS if number.startswith(prefix)), "visa")
