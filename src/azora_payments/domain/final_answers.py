"""The answer a payment's request keeps once the payment is final, whoever made it final: the
request itself, a resumed retry, reconciliation giving up, or Stripe overturning a failure.

A `failed` or `canceled` payment answers `409 payment_failed` (`payment_id`, `retryable:
false`, its `failure`) to every later try of its key; a `succeeded` one answers `201` with the
payment. Stripe reporting money taken for a payment we had given up rewrites the stored answer
to that `201` (Stripe is the truth about money), with an audit record saying so.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment
from azora_payments.db.repositories import idempotency as keys_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.domain import audit
from azora_payments.domain.idempotency import Stored
from azora_payments.domain.statuses import PaymentStatus
from azora_payments.domain.views import payment_view
from azora_payments.errors import PaymentFailed
from azora_payments.logs import request_id_var

GIVEN_UP = frozenset({PaymentStatus.FAILED, PaymentStatus.CANCELED})


async def payment_answer(session: AsyncSession, payment: Payment) -> Stored:
    """The final answer for a payment that is `succeeded`, `failed` or `canceled`."""
    refunds = await payments_repo.refunds_of(session, [payment.id])
    receipts = await payments_repo.receipts_of(session, [payment.id])
    view = payment_view(
        payment, refunds=refunds.get(payment.id, []), receipt=receipts.get(payment.id)
    )
    if payment.status not in GIVEN_UP:
        return Stored.of(201, view)
    error = PaymentFailed(payment_id=payment.id, retryable=False, failure=view["failure"])
    return Stored.of(error.status, error.problem(request_id_var.get()))


async def failure_overturned(session: AsyncSession, payment: Payment, *, previous: str) -> None:
    """Stripe took the money of a payment we had called `previous` (failed or canceled): the
    key's stored answer becomes the 201, and the audit log says why."""
    answer = await payment_answer(session, payment)
    rewritten = await keys_repo.replace_payment_answers(
        session, payment_id=payment.id, status=answer.status, body=answer.body
    )
    audit.record(
        session,
        actor=audit.STRIPE,
        action="payment.failure_overturned",
        payment_id=payment.id,
        details={
            "from": previous,
            "stripe_payment_intent_id": payment.stripe_payment_intent_id,
            "answers_rewritten": rewritten,
        },
    )
