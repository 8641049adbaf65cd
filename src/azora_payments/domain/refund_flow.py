"""Refunding a payment: the idempotent flow of the refund request, in atomic phases.

    begin key ─► [started] ─► lock the payment, check what remains, create the refund row
              (pending, so it counts against what remains at once) ─► [refund_created]
              ─► Stripe: create the refund (the gateway's key, from the refund id)
              ─► settle it through the webhook code path, store the answer ─► [finished]

The payment row lock makes concurrent refunds queue: each sees the others' pending rows, so no
two can take the same money. Stripe unreachable: the refund stays pending (still counted, the
safe side), the key is released, and a retry, a webhook or reconciliation settles it. Any
refusal by Stripe fails the refund (it stops counting) and is the key's final answer:
`RefundRefused` with Stripe's code (`amount_too_large`: `TooMuch`, as when we knew it).

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
from azora_payments.db.models import Refund
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit
from azora_payments.domain.flow_outcomes import Answer, Outcome, Refunded, RefundRefused, TooMuch
from azora_payments.domain.idempotency import Held, IdempotencyKeys, Stored
from azora_payments.domain.refunds import fail, recount_refunded, refundable, settle_refund
from azora_payments.domain.views import refund_view
from azora_payments.errors import PaymentNotFound, PaymentNotRefundable, StripeUnavailable
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.ids import new_id
from azora_payments.stripe_gateway import StripeRefund, StripeRejected

REFUND_CREATED = "refund_created"
# Stripe's word that less remains than we knew (a refund made in its dashboard we have not
# heard of yet): `TooMuch`, as when we knew. Every other refusal keeps Stripe's code.
TOO_MUCH = "amount_too_large"
# A refusal without a code of Stripe's, and a refund Stripe never answered for.
REFUSED = "refund_refused"
NO_ANSWER = "stripe_unreachable"
# How long Stripe keeps an idempotency key: until then, sending again cannot make a second one.
STRIPE_KEY_LIFETIME = timedelta(hours=24)


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
    path: str,
    fingerprint: str,
) -> Answer:
    """Refund under the operator's `key`; `path` names the request the key was made for."""
    begun = await keys.begin(
        user_id=operator.id, key=key, method="POST", path=path, fingerprint=fingerprint
    )
    if isinstance(begun, Stored):
        return Answer(begun)
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


async def _create_refund(
    *, keys: IdempotencyKeys, actor: audit.Actor, request: RefundRequest, held: Held
) -> Answer | None:
    """The pending refund row, or the final `TooMuch` when nothing that large remains."""
    async with keys.phase(held) as phase:
        session = phase.session
        payment = await payments_repo.get(session, request.payment_id, for_update=True)
        if payment is None:
            raise PaymentNotFound()
        if payment.status != "succeeded" or payment.stripe_payment_intent_id is None:
            raise PaymentNotRefundable(payment_id=payment.id)
        remaining = refundable(payment, list(await refunds_repo.of_payment(session, payment.id)))
        amount = request.amount if request.amount is not None else remaining
        if remaining <= 0 or amount > remaining:
            too_much = TooMuch(payment_id=payment.id, remaining=remaining)
            return Answer(await phase.finish(too_much), too_much)
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
        await recount_refunded(session, payment)
        audit.record(
            session,
            actor=actor,
            action="refund.created",
            payment_id=payment.id,
            details={"refund_id": row.id, "amount": amount, "reason": request.reason},
        )
        await phase.advance(REFUND_CREATED, refund_id=row.id)
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
    refused = (row.failure_reason or REFUSED) if row.status == "failed" else None
    if refused is None:
        # (A refund already failed, by an earlier attempt or reconciliation, is not sent again.)
        try:
            created = await _create_at_stripe(stripe, row, payment.stripe_payment_intent_id)
        except StripeRejected as exc:
            refused = exc.stripe_code or REFUSED
    async with keys.phase(held) as phase:
        outcome = await _settle(phase.session, row.id, created=created, refused=refused)
        return Answer(await phase.finish(outcome), outcome)


async def _create_at_stripe(stripe: StripeGateway, row: Refund, intent_id: str) -> StripeRefund:
    """The Stripe call, always with the same parameters (and so the same key) for one row."""
    return await stripe.create_refund(
        refund_id=row.id, payment_intent_id=intent_id, amount=row.amount, reason=row.reason
    )


async def _settle(
    session: AsyncSession, refund_id: str, *, created: StripeRefund | None, refused: str | None
) -> Outcome:
    """Stripe's answer (`created`) or refusal (`refused`, a code) applied to our refund, under
    the payment's lock; the final outcome of its request."""
    row = await refunds_repo.get(session, refund_id)
    assert row is not None
    payment = await payments_repo.get(session, row.payment_id, for_update=True)
    assert payment is not None
    if created is not None:
        await settle_refund(session, payment, created)
        settled = await refunds_repo.get(session, row.id)
        assert settled is not None
        return Refunded(refund_view(settled))
    code = refused or REFUSED
    await fail(session, payment, row, code)
    if code == TOO_MUCH:
        refunds = list(await refunds_repo.of_payment(session, payment.id))
        return TooMuch(payment_id=payment.id, remaining=refundable(payment, refunds))
    return RefundRefused(payment_id=payment.id, code=code)


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
        if row.status != "pending" or row.stripe_refund_id is not None:
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
            outcome = await _settle(session, row.id, created=created, refused=refused)
            if held is not None:
                finished = await keys.finish(session, held, outcome)
        result = f"failed ({refused})" if created is None else f"{how}: {created.status}"
        return [f"{payment.id}: refund {row.id} without an answer -> {result}"]
    finally:
        if held is not None and not finished:
            await keys.release(held)
