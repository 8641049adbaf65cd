"""Refunding a payment: the idempotent flow of `POST /api/payments/refund`, in atomic phases.

    begin key ─► [started] ─► lock the payment, check what remains, create the refund row
              (pending, so it counts against what remains at once) ─► [refund_created]
              ─► Stripe: create the refund (key azora:refund:<refund id>)
              ─► settle it through the webhook code path, store the answer ─► [finished]

The payment row lock makes concurrent refunds queue: each sees the others' pending rows, so no
two can take the same money. Stripe unreachable: the refund stays pending (still counted, the
safe side), the key is released, and a retry, a webhook or reconciliation settles it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.auth import User
from azora_payments.db.models import Payment, Refund
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, events
from azora_payments.domain.idempotency import Held, IdempotencyKeys, Stored
from azora_payments.domain.payment_flow import Answer
from azora_payments.domain.views import refund_view
from azora_payments.errors import (
    AmountExceedsRefundable,
    IdempotencyRequestInProgress,
    PaymentNotFound,
    PaymentNotRefundable,
    RefundRefused,
    StripeUnavailable,
)
from azora_payments.ids import new_id
from azora_payments.logs import request_id_var
from azora_payments.stripe_gateway import StripeGateway, StripeRejected

PATH = "/api/payments/refund"
REFUND_CREATED = "refund_created"
# What cannot be refunded again: `amount_refunded`'s refunds, and those waiting on the customer.
COUNTED = ("pending", "requires_action", "succeeded")
# Stripe's refusals that keep Stripe's code, as 409s.
REFUSALS = frozenset({"charge_already_refunded", "charge_disputed"})
# Stripe's word that less remains than we knew (a refund made in its dashboard we have not
# heard of yet): the caller's 422.
TOO_MUCH = "amount_too_large"


@dataclass(frozen=True, slots=True)
class RefundRequest:
    payment_id: str
    amount: int | None
    reason: str | None


async def refund(
    *,
    keys: IdempotencyKeys,
    stripe: StripeGateway,
    operator: User,
    actor: audit.Actor,
    request: RefundRequest,
    key: str,
    fingerprint: str,
) -> Answer:
    begun = await keys.begin(
        user_id=operator.id, key=key, method="POST", path=PATH, fingerprint=fingerprint
    )
    if isinstance(begun, Stored):
        return Answer(begun, replayed=True)
    held = begun
    try:
        async with keys.working(held):
            refused = None
            if held.recovery_point != REFUND_CREATED:
                refused = await _create_refund(keys=keys, actor=actor, request=request, held=held)
            answer = refused or await _send(keys=keys, stripe=stripe, held=held)
    except StripeUnavailable as exc:
        exc.extra["payment_id"] = request.payment_id
        raise
    await keys.remember(user_id=operator.id, key=key, fingerprint=fingerprint, answer=answer.stored)
    return answer


def _remaining(payment: Payment, refunds: list[Refund]) -> int:
    return payment.amount - sum(r.amount for r in refunds if r.status in COUNTED)


def _exceeds(payment: Payment, remaining: int) -> Stored:
    error = AmountExceedsRefundable(
        f"At most {max(remaining, 0)} can still be refunded.",
        errors=[{"field": "amount", "message": f"must be at most {max(remaining, 0)}"}],
        payment_id=payment.id,
    )
    return Stored.of(error.status, error.problem(request_id_var.get()))


async def _create_refund(
    *, keys: IdempotencyKeys, actor: audit.Actor, request: RefundRequest, held: Held
) -> Answer | None:
    """The pending refund row, or the stored 422 answer when nothing that large remains."""
    async with keys.db.transaction() as session:
        payment = await payments_repo.get(session, request.payment_id, for_update=True)
        if payment is None:
            raise PaymentNotFound()
        if payment.status != "succeeded" or payment.stripe_payment_intent_id is None:
            raise PaymentNotRefundable(payment_id=payment.id)
        remaining = _remaining(payment, list(await refunds_repo.of_payment(session, payment.id)))
        amount = request.amount if request.amount is not None else remaining
        if remaining <= 0 or amount > remaining:
            stored = _exceeds(payment, remaining)
            if not await keys.finish(session, held, stored):
                raise IdempotencyRequestInProgress(headers={"Retry-After": "1"})
            return Answer(stored)
        now = utcnow()
        row = Refund(
            id=new_id("rf"),
            payment_id=payment.id,
            amount=amount,
            currency=payment.currency,
            status="pending",
            reason=request.reason,
            created_by=actor.id,
            created_at=now,
            updated_at=now,
        )
        refunds_repo.add(session, row)
        await session.flush()
        await events.recount_refunded(session, payment)
        audit.record(
            session,
            actor=actor,
            action="refund.created",
            payment_id=payment.id,
            details={"refund_id": row.id, "amount": amount, "reason": request.reason},
        )
        if not await keys.advance(session, held, recovery_point=REFUND_CREATED, refund_id=row.id):
            raise IdempotencyRequestInProgress(headers={"Retry-After": "1"})
    return None


async def _send(*, keys: IdempotencyKeys, stripe: StripeGateway, held: Held) -> Answer:
    assert held.refund_id is not None
    async with keys.db.read() as session:
        row = await refunds_repo.get(session, held.refund_id)
        assert row is not None
        payment = await payments_repo.get(session, row.payment_id)
        assert payment is not None
        assert payment.stripe_payment_intent_id is not None
    if row.status == "failed" and row.failure_reason in REFUSALS:
        # Refused by Stripe on an earlier attempt with this key: the same answer, no new call.
        raise RefundRefused(code=row.failure_reason, payment_id=payment.id)
    try:
        created = await stripe.create_refund(
            refund_id=row.id,
            payment_intent_id=payment.stripe_payment_intent_id,
            amount=row.amount,
            reason=row.reason,
            idempotency_key=f"azora:refund:{row.id}",
        )
    except StripeRejected as exc:
        if exc.stripe_code not in REFUSALS and exc.stripe_code != TOO_MUCH:
            raise
        return await _refused(keys=keys, held=held, refund_id=row.id, code=exc.stripe_code)
    async with keys.db.transaction() as session:
        locked = await payments_repo.get(session, payment.id, for_update=True)
        assert locked is not None
        await events.settle_refund(session, locked, created)
        settled = await refunds_repo.get(session, row.id)
        assert settled is not None
        stored = Stored.of(201, refund_view(settled))
        if not await keys.finish(session, held, stored):
            raise IdempotencyRequestInProgress(headers={"Retry-After": "1"})
    return Answer(stored)


async def _refused(*, keys: IdempotencyKeys, held: Held, refund_id: str, code: str) -> Answer:
    """Stripe made no refund: ours fails, stops counting, and the caller hears Stripe's code."""
    async with keys.db.transaction() as session:
        row = await refunds_repo.get(session, refund_id)
        assert row is not None
        payment = await payments_repo.get(session, row.payment_id, for_update=True)
        assert payment is not None
        await _fail(session, payment, row, code)
        if code == TOO_MUCH:
            refunds = list(await refunds_repo.of_payment(session, payment.id))
            stored = _exceeds(payment, _remaining(payment, refunds))
            if not await keys.finish(session, held, stored):
                raise IdempotencyRequestInProgress(headers={"Retry-After": "1"})
            return Answer(stored)
    raise RefundRefused(code=code, payment_id=row.payment_id)


async def _fail(session: AsyncSession, payment: Payment, row: Refund, code: str) -> None:
    if row.status == "failed":
        return
    row.status = "failed"
    row.failure_reason = code
    row.updated_at = utcnow()
    await session.flush()
    await events.recount_refunded(session, payment)
    audit.record(
        session,
        actor=audit.STRIPE,
        action="refund.failed",
        payment_id=payment.id,
        details={"refund_id": row.id, "code": code},
    )


def refundable(payment: Payment, refunds: list[Refund]) -> int:
    """What may still be refunded: the amount less refunds made or still pending."""
    return max(_remaining(payment, refunds), 0)
