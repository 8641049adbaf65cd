"""Gaps e and i for charges: declines at charge time with Stripe's ``card_error`` (the test cards,
or any reason on demand through ``POST /_azora/declines``), charge events, charge lists.

Shown by ``tests/devstack/test_emulator.py``: ``test_e_decline_at_charge_time_looks_like_stripe``,
``test_e_any_decline_reason_on_demand``, ``test_e_retry_after_decline_with_another_card``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from localstripe import resources as R

from azora_payments.devstack.localstripe_patches._base import (
    DECLINE_PARAMS,
    DECLINE_RULES,
    DECLINES,
    DISPUTE_CARD,
    GENERIC_DECLINE,
    DeclineRule,
    StripeError,
    card_number,
    emit,
    later,
)
from azora_payments.devstack.localstripe_patches.gap_h_disputes import open_dispute
from azora_payments.devstack.localstripe_patches.gap_i_lists import equal_to, filtered_list


def _charge_init(original: Callable[..., None]) -> Callable[..., None]:
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        pm = R.store.get("payment_method:" + self.payment_method)
        card = dict(getattr(pm, "card", None) or {})
        self.payment_method_details = (
            {"type": "card", "card": {**card, "network": card.get("brand")}}
            if card
            else {"type": getattr(pm, "type", "card")}
        )
        self.billing_details = dict(getattr(pm, "billing_details", None) or {})
        self.disputed = False
        self.outcome = (
            {
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            }
            if self._authorized
            else None
        )

    return init


def _charge_set_auth_failure(self: Any) -> None:
    pm = R.store.get("payment_method:" + (self.payment_method or ""))
    on_demand = getattr(pm, "_azora_decline", None)
    if on_demand is not None:
        pm._azora_decline = None
    code, decline_code, message = on_demand or DECLINES.get(
        card_number(self.payment_method) or "",
        ("card_declined", "generic_decline", GENERIC_DECLINE),
    )
    self.status = "failed"
    self.failure_code = code
    self.failure_message = message
    self._azora_decline_code = decline_code
    self.outcome = {
        "network_status": "declined_by_network",
        "reason": decline_code,
        "risk_level": "normal",
        "seller_message": "The bank did not return any further details with this decline.",
        "type": "issuer_declined",
    }
    emit("charge.failed", self)


def card_error(charge: Any) -> dict[str, Any]:
    """Stripe's `card_error` body for a declined charge (without `payment_intent`)."""
    pm = R.store.get("payment_method:" + charge.payment_method)
    error: dict[str, Any] = {
        "type": "card_error",
        "code": charge.failure_code,
        "decline_code": getattr(charge, "_azora_decline_code", "generic_decline"),
        "message": charge.failure_message,
        "charge": charge.id,
        "doc_url": f"https://stripe.com/docs/error-codes/{charge.failure_code.replace('_', '-')}",
        "payment_method": pm._export() if pm is not None else None,
    }
    if charge.failure_code in DECLINE_PARAMS:
        error["param"] = DECLINE_PARAMS[charge.failure_code]
    return error


def _charge_raise_failure(self: Any) -> None:
    raise StripeError(402, card_error(self))


def _charge_trigger_payment(original: Callable[..., None]) -> Callable[..., None]:
    def trigger(self: Any, on_success: Callable[[], None] | None = None) -> None:
        capturing = not self.captured

        def settled() -> None:
            if capturing:
                if on_success:
                    on_success()
                emit("charge.captured", self)
            else:
                emit("charge.succeeded", self)
                if on_success:
                    on_success()
            if card_number(self.payment_method) == DISPUTE_CARD and not self.disputed:
                later(lambda: open_dispute(self))

        original(self, settled)

    return trigger


def _charge_initialize(original: Callable[..., None]) -> Callable[..., None]:
    # An authorised but uncaptured charge is never "triggered", so localstripe says nothing.
    def initialize(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self.status == "succeeded" and not self.captured:
            emit("charge.succeeded", self)
            pi = R.store.get("payment_intent:" + (self.payment_intent or ""))
            if pi is not None:
                emit("payment_intent.amount_capturable_updated", pi)

    return initialize


def _charge_amount_refunded(self: Any) -> int:
    # A failed refund gives the money back to the merchant: it no longer counts.
    return sum(r.amount for r in self.refunds._list if r.status in ("succeeded", "pending"))


def _charge_amount_captured(self: Any) -> int:
    return int(self.amount) if self.captured and self.status == "succeeded" else 0


async def add_decline(request: web.Request) -> web.Response:
    """``POST /_azora/declines``: JSON ``decline_code`` (Stripe's: ``stolen_card``,
    ``pickup_card``, …), optional ``code`` (``card_declined``), ``message``, ``card`` (a card
    number, e.g. ``4242424242424242``: only that card) and ``times`` (1)."""
    try:
        data = await request.json()
        rule = DeclineRule(
            decline_code=str(data["decline_code"]),
            code=str(data.get("code", "card_declined")),
            message=str(data.get("message", GENERIC_DECLINE)),
            card=str(data["card"]) if data.get("card") else None,
            times=int(data.get("times", 1)),
        )
    except (ValueError, KeyError, TypeError) as e:
        return web.json_response(
            {"error": {"type": "invalid_request_error", "message": f"Bad decline: {e!r}"}},
            status=400,
        )
    DECLINE_RULES.append(rule)
    return web.json_response(rule.__dict__, status=201)


async def clear_declines(request: web.Request) -> web.Response:
    DECLINE_RULES.clear()
    return web.json_response({})


def install() -> None:
    ch = R.Charge
    ch.__init__ = _charge_init(ch.__init__)
    ch._set_auth_failure = _charge_set_auth_failure
    ch._raise_failure = _charge_raise_failure
    ch._trigger_payment = _charge_trigger_payment(ch._trigger_payment)
    ch._initialize_charge = _charge_initialize(ch._initialize_charge)
    ch.amount_refunded = property(_charge_amount_refunded)
    ch.amount_captured = property(_charge_amount_captured)
    ch._api_list_all = filtered_list("charge", equal_to("customer", "payment_intent"))


def register_routes(app: web.Application) -> None:
    """Declines on demand."""
    app.router.add_post("/_azora/declines", add_decline)
    app.router.add_delete("/_azora/declines", clear_declines)
