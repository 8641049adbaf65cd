"""Refunding a payment: how a refund's state moves (`settle_refund`, shared by the API, webhooks
and reconciliation), and the idempotent flow of `POST /api/payments/refund`, in atomic phases.

A refund's status only moves forward (pending < requires_action < succeeded < failed/canceled:
a succeeded refund can still fail at the bank), and its amount is Stripe's. `amount_refunded` is
recomputed from the refund rows (pending or succeeded ones, as Stripe counts), never by adding
events up, so a replayed event cannot count twice.

    begin key ─► [started] ─► lock the payment, check what remains, create the refund row
              (pending, so it counts against what remains at once) ─► [refund_created]
              ─► Stripe: create the refund (key azora:refund:<refund id>)
              ─► settle it through the webhook code path, store the answer ─► [finished]

The payment row lock makes concurrent refunds queue: each sees the others' pending rows, so no
two can take the same money. Stripe unreachable: the refund stays pending (still counted, the
safe side), the key is released, and a retry, a webhook or reconciliation settles it. Any
refusal by Stripe fails the refund (it stops counting) and is the key's final answer: `409`
with Stripe's code, `retryable: false` (`amount_too_large`: the caller's `422`).

`settle_unanswered` is reconciliation's way to finish a refund whose request never heard
back from Stripe and was not retried: it takes the request's key, then sends the refund again
with the same Stripe idempotency key while Stripe keeps it (24 h), else looks it up, else fails
it (audit record, `refund.failed` notification).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.auth import User
from azora_payments.db.models import Payment, Refund
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, outcomes
from azora_payments.domain.idempotency import Held, IdempotencyKeys, Stored
from azora_payments.domain.payment_flow import Answer
from azora_payments.domain.statuses import PaymentStatus, RefundStatus
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
from azora_payments.stripe_gateway import StripeGateway, StripeRefund, StripeRejected

PATH = "/api/payments/refund"
REFUND_CREATED = "refund_created"
# What cannot be refunded again: `amount_refunded`'s refunds, and those waiting on the customer.
COUNTED = (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED)
# Stripe's word that less remains than we knew (a refund made in its dashboard we have not
# heard of yet): the caller's 422. Every other refusal keeps Stripe's code, as a 409.
TOO_MUCH = "amount_too_large"
# A refusal without a code of Stripe's, and a refund Stripe never answered for.
REFUSED = "refund_refused"
NO_ANSWER = "stripe_unreachable"
# How long Stripe keeps an idempotency key: until then, sending again cannot make a second one.
STRIPE_KEY_LIFETIME = timedelta(hours=24)

_REFUND_RANK: dict[str, int] = {
    RefundStatus.PENDING: 0,
    RefundStatus.REQUIRES_ACTION: 1,
    RefundStatus.SUCCEEDED: 2,
    RefundStatus.FAILED: 3,
    RefundStatus.CANCELED: 3,
}
# What `amount_refunded` counts, as Stripe does: money that is or will be returned.
COUNTED_REFUNDS = frozenset({RefundStatus.PENDING, RefundStatus.SUCCEEDED})


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
        if payment.status != PaymentStatus.SUCCEEDED or payment.stripe_payment_intent_id is None:
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
            status=RefundStatus.PENDING,
            reason=request.reason,
            created_by=actor.id,
            created_at=now,
            updated_at=now,
        )
        refunds_repo.add(session, row)
        await session.flush()
        await recount_refunded(session, payment)
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
    created: StripeRefund | None = None
    refused = (row.failure_reason or REFUSED) if row.status == RefundStatus.FAILED else None
    if refused is None:
        # (A refund already failed, by an earlier attempt or reconciliation, is not sent again.)
        try:
            created = await _create_at_stripe(stripe, row, payment.stripe_payment_intent_id)
        except StripeRejected as exc:
            refused = exc.stripe_code or REFUSED
    async with keys.db.transaction() as session:
        stored = await _settle(session, row.id, created=created, refused=refused)
        if not await keys.finish(session, held, stored):
            raise IdempotencyRequestInProgress(headers={"Retry-After": "1"})
    return Answer(stored)


async def _create_at_stripe(stripe: StripeGateway, row: Refund, intent_id: str) -> StripeRefund:
    """The Stripe call, always with the same parameters and key for one refund row."""
    return await stripe.create_refund(
        refund_id=row.id,
        payment_intent_id=intent_id,
        amount=row.amount,
        reason=row.reason,
        idempotency_key=f"azora:refund:{row.id}",
    )


async def _settle(
    session: AsyncSession, refund_id: str, *, created: StripeRefund | None, refused: str | None
) -> Stored:
    """Stripe's answer (`created`) or refusal (`refused`, a code) applied to our refund, under
    the payment's lock; the final answer of its request."""
    row = await refunds_repo.get(session, refund_id)
    assert row is not None
    payment = await payments_repo.get(session, row.payment_id, for_update=True)
    assert payment is not None
    if created is not None:
        await settle_refund(session, payment, created)
        settled = await refunds_repo.get(session, row.id)
        assert settled is not None
        return Stored.of(201, refund_view(settled))
    code = refused or REFUSED
    await _fail(session, payment, row, code)
    if code == TOO_MUCH:
        refunds = list(await refunds_repo.of_payment(session, payment.id))
        return _exceeds(payment, _remaining(payment, refunds))
    error = RefundRefused(code=code, payment_id=payment.id, retryable=False)
    return Stored.of(error.status, error.problem(request_id_var.get()))


async def settle_unanswered(
    *, keys: IdempotencyKeys, stripe: StripeGateway, refund_id: str, now: datetime
) -> list[str]:
    """Finish a pending refund that has no Stripe id (see the module docstring); what changed.
    `KeyBusy` when a retry holds its key; Stripe unavailable raises and changes nothing."""
    taken = await keys.take_over(refund_id=refund_id)
    held = taken if isinstance(taken, Held) else None
    finished = False
    try:
        async with keys.db.read() as session:
            row = await refunds_repo.get(session, refund_id)
            payment = await payments_repo.get(session, row.payment_id) if row else None
        if row is None or payment is None or payment.stripe_payment_intent_id is None:
            return []
        if row.status != RefundStatus.PENDING or row.stripe_refund_id is not None:
            return []  # settled meanwhile (a webhook, the request's own retry)
        created: StripeRefund | None = None
        refused: str | None = None
        how = "sent again"
        if now - row.created_at < STRIPE_KEY_LIFETIME:
            try:
                created = await _create_at_stripe(stripe, row, payment.stripe_payment_intent_id)
            except StripeRejected as exc:
                refused = exc.stripe_code or REFUSED
        else:
            how = "looked up"
            listed = await stripe.list_refunds(payment.stripe_payment_intent_id)
            created = next((r for r in listed if r.metadata.get("azora_refund_id") == row.id), None)
            refused = None if created is not None else NO_ANSWER
        async with keys.db.transaction() as session:
            stored = await _settle(session, row.id, created=created, refused=refused)
            if held is not None:
                finished = await keys.finish(session, held, stored)
        outcome = f"failed ({refused})" if created is None else f"{how}: {created.status}"
        return [f"{payment.id}: refund {row.id} without an answer -> {outcome}"]
    finally:
        if held is not None and not finished:
            await keys.release(held)


async def _fail(session: AsyncSession, payment: Payment, row: Refund, code: str) -> None:
    if row.status == RefundStatus.FAILED:
        return
    previous = row.status
    row.status = RefundStatus.FAILED
    row.failure_reason = code
    row.updated_at = utcnow()
    await session.flush()
    await recount_refunded(session, payment)
    audit.record(
        session,
        actor=audit.STRIPE,
        action="refund.failed",
        payment_id=payment.id,
        details={"refund_id": row.id, "code": code},
    )
    await outcomes.refund_status_changed(session, payment, row, previous=previous)


def refundable(payment: Payment, refunds: list[Refund]) -> int:
    """What may still be refunded: the amount less refunds made or still pending."""
    return max(_remaining(payment, refunds), 0)


# ------------------------------------------------------------------ the refund's state


async def settle_refund(session: AsyncSession, payment: Payment, refund: StripeRefund) -> list[str]:
    """Record or update the refund Stripe describes, then recompute `amount_refunded` from the
    rows. A refund made in Stripe's dashboard becomes a refund of the payment (`created_by`
    stripe)."""
    changes: list[str] = []
    row = await refunds_repo.get_by_stripe_id(session, refund.id)
    ours = refund.metadata.get("azora_refund_id")
    id_free = True
    if row is None and ours:
        row = await refunds_repo.get(session, ours)
        id_free = row is None
        if row is not None and row.payment_id != payment.id:
            row = None  # metadata pointing elsewhere: trust Stripe's object, not the label
    now = utcnow()
    if row is None:
        row = Refund(
            # Our own refund whose row is missing keeps the id Stripe carries for it.
            id=ours if ours and id_free else new_id("rf"),
            payment_id=payment.id,
            amount=refund.amount,
            currency=refund.currency,
            status=refund.status,
            reason=refund.reason,
            stripe_refund_id=refund.id,
            failure_reason=refund.failure_reason,
            created_by=audit.STRIPE_ACTOR,
            created_at=now,
            updated_at=now,
        )
        refunds_repo.add(session, row)
        audit.record(
            session,
            actor=audit.STRIPE,
            action="refund.created",
            payment_id=payment.id,
            details={
                "refund_id": row.id,
                "stripe_refund_id": refund.id,
                "amount": refund.amount,
                "status": refund.status,
                "made_in_stripe": ours is None,
            },
        )
        changes.append(f"{payment.id}: refund {row.id} recorded ({refund.status})")
        await outcomes.refund_status_changed(session, payment, row, previous=None)
    else:
        if row.stripe_refund_id is None:
            row.stripe_refund_id = refund.id
        if row.amount != refund.amount:
            row.amount = refund.amount  # Stripe's amount is the truth
            row.updated_at = now
        if _refund_may_move(row.status, refund.status):
            previous = row.status
            row.status = refund.status
            if refund.failure_reason:
                row.failure_reason = refund.failure_reason
            row.updated_at = now
            audit.record(
                session,
                actor=audit.STRIPE,
                action=f"refund.{refund.status}",
                payment_id=payment.id,
                details={"refund_id": row.id, "from": previous, "stripe_refund_id": refund.id},
            )
            changes.append(f"{payment.id}: refund {row.id} {previous} -> {refund.status}")
            await outcomes.refund_status_changed(session, payment, row, previous=previous)
    changes += await recount_refunded(session, payment)
    return changes


def _refund_may_move(current: str, new: str) -> bool:
    if current == new or new not in _REFUND_RANK:
        return False
    return _REFUND_RANK[new] > _REFUND_RANK.get(current, -1)


async def recount_refunded(session: AsyncSession, payment: Payment) -> list[str]:
    """`amount_refunded` from the refund rows (pending and succeeded count, as Stripe counts)."""
    rows = await refunds_repo.of_payment(session, payment.id)
    total = sum(r.amount for r in rows if r.status in COUNTED_REFUNDS)
    if total == payment.amount_refunded:
        return []
    previous = payment.amount_refunded
    payment.amount_refunded = total
    payment.updated_at = utcnow()
    return [f"{payment.id}: amount_refunded {previous} -> {total}"]
