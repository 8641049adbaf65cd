"""Payment state: how a Stripe PaymentIntent maps onto our payment, moving forward only.

`apply_intent` is the one code path through which the API's own answer, a webhook and
reconciliation (both through `settle_intent`) all change a payment, so they cannot disagree,
and a late or replayed snapshot can never turn `succeeded` back into `processing`.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, declines, outcomes
from azora_payments.domain.statuses import UNSETTLED_PAYMENTS, PaymentStatus
from azora_payments.logs import log_fields
from azora_payments.stripe_gateway import PaymentError, StripeIntent

logger = logging.getLogger(__name__)

FINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED})
UNSETTLED = UNSETTLED_PAYMENTS

# A status may only move to one of higher rank. `succeeded` outranks `failed` because money
# taken is a fact: a payment Stripe reports succeeded (say, after the customer completed 3-D
# Secure with another card) must show it, whatever failure was seen before.
_RANK: dict[str, int] = {
    PaymentStatus.REQUIRES_PAYMENT_METHOD: 0,
    PaymentStatus.REQUIRES_ACTION: 1,
    PaymentStatus.PROCESSING: 2,
    PaymentStatus.CANCELED: 3,
    PaymentStatus.FAILED: 3,
    PaymentStatus.SUCCEEDED: 4,
}


def status_of(intent: StripeIntent) -> PaymentStatus:
    """Our status for a PaymentIntent in Stripe's (a failed attempt leaves Stripe's intent at
    `requires_payment_method` with a `last_payment_error`)."""
    if intent.status == "succeeded":
        return PaymentStatus.SUCCEEDED
    if intent.status == "canceled":
        return PaymentStatus.CANCELED
    if intent.status == "requires_action":
        return PaymentStatus.REQUIRES_ACTION
    if intent.status == "requires_payment_method":
        if intent.last_payment_error is not None:
            return PaymentStatus.FAILED
        return PaymentStatus.REQUIRES_PAYMENT_METHOD
    # processing, requires_confirmation, requires_capture: Stripe is still at it.
    return PaymentStatus.PROCESSING


def rank(status: str) -> int:
    """How far along a status is (a status only moves to a higher rank)."""
    return _RANK[status]


def may_move(current: str, new: str) -> bool:
    if current == new:
        return False
    if current in FINAL and new != PaymentStatus.SUCCEEDED:
        return False
    return _RANK[new] > _RANK[current]


def intent_mismatch(payment: Payment, intent: StripeIntent) -> str | None:
    """Why `intent` is not this payment's (the field that differs), or None when it is: the
    intent we recorded, or one carrying our payment id, for the same amount, currency and
    Stripe customer. Another integration on the same Stripe account must not settle ours."""
    if payment.stripe_payment_intent_id not in (None, intent.id):
        return "stripe_payment_intent_id"
    ours = intent.metadata.get("azora_payment_id")
    if ours != payment.id and not (ours is None and payment.stripe_payment_intent_id == intent.id):
        return "azora_payment_id"
    if intent.amount != payment.amount:
        return "amount"
    if intent.currency.lower() != payment.currency:
        return "currency"
    if payment.stripe_customer_id is not None and intent.customer != payment.stripe_customer_id:
        return "customer"
    return None


def refuse_mismatch(
    session: AsyncSession, payment: Payment, intent: StripeIntent, *, field: str
) -> None:
    """An intent that is not this payment's: logged and audited, never applied."""
    logger.warning(
        "stripe intent does not match the payment: not applied",
        extra=log_fields(payment_id=payment.id, intent=intent.id, field=field),
    )
    audit.record(
        session,
        actor=audit.STRIPE,
        action="payment.intent_mismatch",
        payment_id=payment.id,
        details={"stripe_payment_intent_id": intent.id, "field": field},
    )


async def apply_intent(
    session: AsyncSession,
    payment: Payment,
    intent: StripeIntent,
    *,
    actor: audit.Actor,
    failure: PaymentError | None = None,
) -> bool:
    """Bring `payment` forward to what `intent` says; True when its status changed. An intent
    that does not match the payment is refused (`intent_mismatch`). `failure` is the decline as
    Stripe's error answer told it (what the 402 says), which is then the payment's failure
    rather than the intent's `last_payment_error`."""
    mismatch = intent_mismatch(payment, intent)
    if mismatch is not None:
        refuse_mismatch(session, payment, intent, field=mismatch)
        return False
    # Until Stripe's first answer, `processing` is only a placeholder ("we asked Stripe"), so
    # the first snapshot of the intent sets the status whatever its rank.
    first_answer = payment.stripe_payment_intent_id is None
    if first_answer:
        payment.stripe_payment_intent_id = intent.id
    if intent.latest_charge and payment.stripe_charge_id is None:
        payment.stripe_charge_id = intent.latest_charge
    new = status_of(intent)
    error = failure or intent.last_payment_error
    if new == PaymentStatus.FAILED and error is not None:
        # Every decline counts against the limits, also one of a payment already failed (a
        # card tried again in Stripe.js); each failed charge once.
        await declines.record(session, payment, error)
    if not (may_move(payment.status, new) or (first_answer and new != payment.status)):
        return False
    previous = payment.status
    payment.status = new
    payment.client_secret = intent.client_secret if new == PaymentStatus.REQUIRES_ACTION else None
    details: dict[str, str | None] = {"from": previous, "stripe_payment_intent_id": intent.id}
    if new == PaymentStatus.FAILED and error is not None:
        _set_failure(payment, error)
        details |= _failure_details(payment)
    elif new == PaymentStatus.SUCCEEDED:
        _set_failure(payment, None)
    payment.updated_at = utcnow()
    audit.record(
        session, actor=actor, action=f"payment.{new}", payment_id=payment.id, details=details
    )
    await outcomes.payment_status_changed(session, payment, previous=previous)
    return True


async def settle_intent(session: AsyncSession, payment: Payment, intent: StripeIntent) -> list[str]:
    """Bring a locked payment forward to what Stripe's PaymentIntent says."""
    previous = payment.status
    if not await apply_intent(session, payment, intent, actor=audit.STRIPE):
        return []
    return [f"{payment.id}: {previous} -> {payment.status}"]


async def mark_failed(
    session: AsyncSession, payment: Payment, error: PaymentError, *, actor: audit.Actor
) -> bool:
    """A decline told by Stripe's error answer rather than by an intent snapshot."""
    await declines.record(session, payment, error)
    if not may_move(payment.status, PaymentStatus.FAILED):
        return False
    previous = payment.status
    payment.status = PaymentStatus.FAILED
    payment.client_secret = None
    _set_failure(payment, error)
    payment.updated_at = utcnow()
    audit.record(
        session,
        actor=actor,
        action="payment.failed",
        payment_id=payment.id,
        details={"from": previous, **_failure_details(payment)},
    )
    await outcomes.payment_status_changed(session, payment, previous=previous)
    return True


def _set_failure(payment: Payment, error: PaymentError | None) -> None:
    """The failure as it is told (`declines.public_failure`), and Stripe's real reason beside
    it for operators."""
    told = declines.public_failure(error) if error else None
    payment.failure_code = told.code if told else None
    payment.failure_decline_code = told.decline_code if told else None
    payment.failure_message = told.message if told else None
    payment.stripe_decline_code = error.decline_code if error else None


def _failure_details(payment: Payment) -> dict[str, str | None]:
    """The audit record's view of a failure: operators see Stripe's real reason."""
    return {
        "code": payment.failure_code,
        "decline_code": payment.failure_decline_code,
        "stripe_decline_code": payment.stripe_decline_code,
    }
