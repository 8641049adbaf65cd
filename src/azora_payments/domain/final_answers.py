"""The answer a payment's request keeps once the payment is final, whoever made it final: the
request itself, a resumed retry, reconciliation giving up, or Stripe overturning a failure.

A `failed` or `canceled` payment is `PaymentGivenUp` (`payment_id`, its `failure`; API.md's
`409 payment_failed`) to every later try of its key; a `succeeded` one is `Charged` with the
payment. Stripe reporting money taken for a payment we had given up rewrites the stored answer
to that of `Charged` (Stripe is the truth about money), with an audit record saying so.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment
from azora_payments.db.repositories import idempotency as keys_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.domain import audit
from azora_payments.domain.flow_outcomes import Charged, PaymentGivenUp
from azora_payments.domain.idempotency import render
from azora_payments.domain.statuses import PaymentStatus
from azora_payments.domain.views import payment_view

GIVEN_UP = frozenset({PaymentStatus.FAILED, PaymentStatus.CANCELED})


async def payment_answer(session: AsyncSession, payment: Payment) -> Charged | PaymentGivenUp:
    """The final outcome for a payment that is `succeeded`, `failed` or `canceled`."""
    refunds = await payments_repo.refunds_of(session, [payment.id])
    receipts = await payments_repo.receipts_of(session, [payment.id])
    view = payment_view(
        payment, refunds=refunds.get(payment.id, []), receipt=receipts.get(payment.id)
    )
    if payment.status not in GIVEN_UP:
        return Charged(view)
    return PaymentGivenUp(payment_id=payment.id, failure=view["failure"])


async def failure_overturned(session: AsyncSession, payment: Payment, *, previous: str) -> None:
    """Stripe took the money of a payment we had called `previous` (failed or canceled): the
    key's stored answer becomes that of `Charged`, and the audit log says why."""
    answer = render(await payment_answer(session, payment))
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
