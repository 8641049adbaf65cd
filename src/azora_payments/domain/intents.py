"""Closing, at Stripe, PaymentIntents we will not complete: a failed payment's, so that no
`client_secret` can confirm it again with other cards, and an abandoned 3-D Secure one's, after
`REQUIRES_ACTION_EXPIRES_HOURS`. What Stripe answers is applied like any snapshot, so an intent
that took the money meanwhile makes its payment `succeeded` (Stripe is the truth about money).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import audit
from azora_payments.domain.final_answers import GIVEN_UP
from azora_payments.domain.payments import apply_intent
from azora_payments.errors import ServiceUnavailable
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.logs import log_fields
from azora_payments.stripe_gateway import StripeIntent, StripeRejected

logger = logging.getLogger(__name__)

# The intent states Stripe lets us cancel.
CANCELABLE = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)
BATCH = 200


class StillProcessing(Exception):
    """Stripe is still working on the intent: try again later (the job's retry)."""


async def close_failed(*, db: Database, stripe: StripeGateway, payment_id: str) -> list[str]:
    """Cancel the intent of a payment that failed; what changed here (nothing, usually)."""
    async with db.read() as session:
        payment = await payments_repo.get(session, payment_id)
    if payment is None or payment.status not in GIVEN_UP:
        return []
    if payment.stripe_payment_intent_id is None:
        return []
    return await _close(db, stripe, payment_id, payment.stripe_payment_intent_id)


async def close_failed_now(*, db: Database, stripe: StripeGateway, payment_id: str) -> None:
    """`close_failed` at once, best effort: the job queued with the failure is the backstop."""
    try:
        await close_failed(db=db, stripe=stripe, payment_id=payment_id)
    except (ServiceUnavailable, StripeRejected, StillProcessing) as exc:
        logger.warning(
            "failed payment's intent not closed yet: its job will",
            extra=log_fields(payment_id=payment_id, error=type(exc).__name__),
        )


async def expire_requires_action(
    *, db: Database, stripe: StripeGateway, after_hours: int, now: datetime | None = None
) -> list[str]:
    """Cancel the payments left in `requires_action` for longer than `after_hours`."""
    before = (now or utcnow()) - timedelta(hours=after_hours)
    async with db.read() as session:
        waiting = await payments_repo.waiting_for_action_since(session, before=before, limit=BATCH)
    changes: list[str] = []
    for payment_id in waiting:
        async with db.read() as session:
            payment = await payments_repo.get(session, payment_id)
        if payment is None or payment.stripe_payment_intent_id is None:
            continue
        try:
            changes += await _close(db, stripe, payment_id, payment.stripe_payment_intent_id)
        except (ServiceUnavailable, StripeRejected, StillProcessing) as exc:
            # The next run tries again; the others are not held up.
            logger.warning(
                "abandoned payment not canceled yet",
                extra=log_fields(payment_id=payment_id, error=type(exc).__name__),
            )
    return changes


async def _close(db: Database, stripe: StripeGateway, payment_id: str, intent_id: str) -> list[str]:
    intent = await stripe.retrieve_payment_intent(intent_id)
    if intent.status in CANCELABLE:
        intent = await _cancel(stripe, intent)
    if intent.status == "processing":
        raise StillProcessing(intent.id)
    async with db.transaction() as session:
        payment = await payments_repo.get(session, payment_id, for_update=True)
        assert payment is not None
        previous = payment.status
        if not await apply_intent(session, payment, intent, actor=audit.SYSTEM):
            return []
    logger.info(
        "payment intent closed",
        extra=log_fields(payment_id=payment_id, intent=intent.id, status=intent.status),
    )
    return [f"{payment_id}: {previous} -> {payment.status} (intent {intent.status})"]


async def _cancel(stripe: StripeGateway, intent: StripeIntent) -> StripeIntent:
    try:
        return await stripe.cancel_payment_intent(intent.id, reason="abandoned")
    except StripeRejected as exc:
        if exc.stripe_code != "payment_intent_unexpected_state":
            raise
        # It moved on between our read and the cancel (say, 3-D Secure just completed).
        return await stripe.retrieve_payment_intent(intent.id)
