"""Gaps c and g for refunds: ``reason``, over-refund / already-refunded / disputed refusals, the
refund that fails later (card 5126), refund events.

Shown by ``tests/devstack/test_emulator.py``: ``test_c_refund_reason_and_metadata``,
``test_g_refund_rules``, ``test_g_refund_that_fails_later``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localstripe import resources as R

from azora_payments.devstack.localstripe_patches._base import (
    REFUND_FAIL_CARD,
    card_number,
    emit,
    invalid,
    later,
)
from azora_payments.devstack.localstripe_patches.gap_i_lists import equal_to, filtered_list

REFUND_REASONS = (None, "duplicate", "fraudulent", "requested_by_customer")


def _refund_init(original: Callable[..., None]) -> Callable[..., None]:
    def init(
        self: Any,
        charge: str | None = None,
        payment_intent: str | None = None,
        amount: Any = None,
        metadata: Any = None,
        reason: str | None = None,
        instructions_email: str | None = None,
        **kwargs: Any,
    ) -> None:
        if reason not in REFUND_REASONS:
            raise invalid(f"Invalid reason: must be one of {REFUND_REASONS[1:]}", param="reason")
        if payment_intent is not None and charge is None:
            pi = R.PaymentIntent._api_retrieve(payment_intent)
            if pi.latest_charge is None or pi.latest_charge.status != "succeeded":
                raise invalid(
                    f"This PaymentIntent ({payment_intent}) does not have a successful charge "
                    "to refund.",
                    param="payment_intent",
                )
            charge_obj = pi.latest_charge
        elif isinstance(charge, str):
            charge_obj = R.Charge._api_retrieve(charge)
        else:
            charge_obj = None  # localstripe's own checks answer this one
        if charge_obj is not None and charge_obj.status == "succeeded":
            _check_refundable(charge_obj, amount)
            if amount is None:
                amount = charge_obj.amount - charge_obj.amount_refunded
        original(
            self, charge=charge, payment_intent=payment_intent, amount=amount,
            metadata=metadata, **kwargs,
        )  # fmt: skip
        charge_obj = R.Charge._api_retrieve(self.charge)
        self.payment_intent = charge_obj.payment_intent
        self.reason = reason
        self.failure_reason = None
        self.receipt_number = None
        self.destination_details = {"type": "card", "card": {"type": "refund"}}
        emit("refund.created", self)
        emit("charge.refunded", charge_obj)
        if card_number(charge_obj.payment_method) == REFUND_FAIL_CARD:
            later(lambda: _fail_refund(self))
        else:
            later(lambda: _refund_settled(self))

    return init


def _check_refundable(charge: Any, amount: Any) -> None:
    if charge.disputed:
        raise invalid(
            f"Charge {charge.id} has been charged back; cannot issue a refund.",
            code="charge_disputed",
        )
    remaining = charge.amount - charge.amount_refunded
    if remaining <= 0:
        raise invalid(
            f"Charge {charge.id} has already been refunded.", code="charge_already_refunded"
        )
    requested = R.try_convert_to_int(amount)
    if isinstance(requested, int) and requested > remaining:
        raise invalid(
            f"Refund amount ({_money(requested, charge.currency)}) is greater than unrefunded "
            f"amount on charge ({_money(remaining, charge.currency)})",
            code="amount_too_large",
            param="amount",
        )


def _money(amount: int, currency: str) -> str:
    return f"{amount / 100:.2f} {currency.upper()}"


def _refund_settled(refund: Any) -> None:
    # Stripe follows a card refund with an update once the network reference is known.
    if refund.status == "succeeded":
        refund.destination_details["card"]["reference_status"] = "available"
        emit("charge.refund.updated", refund)
        emit("refund.updated", refund)


def _fail_refund(refund: Any) -> None:
    refund.status = "failed"
    refund.failure_reason = "expired_or_canceled_card"
    emit("charge.refund.updated", refund)
    emit("refund.updated", refund)
    emit("refund.failed", refund)


def install() -> None:
    R.Refund.__init__ = _refund_init(R.Refund.__init__)
    R.Refund._api_list_all = filtered_list("refund", equal_to("charge", "payment_intent"))
