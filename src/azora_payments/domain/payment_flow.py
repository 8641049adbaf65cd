"""Taking a payment: the idempotent flow of a payment request, in atomic phases.

    begin key ─► [started] ─► check the card, create the payment row ─► [payment_created]
              ─► Stripe: create + confirm the PaymentIntent (key azora:pi:<payment id>)
              ─► apply the outcome, store the answer ─► [finished]

Each arrow into a bracket is one committed transaction. A crash anywhere leaves the key at a
recovery point; the next attempt with the same key resumes there, and because the Stripe
idempotency key derives from our payment id, Stripe answers a resumed call with the
PaymentIntent it already made. Stripe unreachable: the payment stays `processing`, the key is
released unfinished, and `StripeUnavailable` is raised: a retry, a webhook or reconciliation
settles it. The flow ends with an outcome (`Charged`, `Declined`, `Rejected`, `PaymentGivenUp`)
whose answer `api/` renders and the key stores.
Final means final: a resumed attempt that finds its payment already settled (by a webhook, or
by reconciliation giving up) answers it as it stands and never calls Stripe to charge it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.addresses import plain_address_or_none
from azora_payments.auth import User
from azora_payments.db.models import Payment
from azora_payments.db.repositories import methods as methods_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, declines, event_batch, final_answers, intents, methods
from azora_payments.domain.flow_outcomes import Answer, Charged, Declined, Outcome, Rejected
from azora_payments.domain.idempotency import Held, IdempotencyKeys, Stored
from azora_payments.domain.payments import FINAL, apply_intent, mark_failed
from azora_payments.domain.views import payment_view
from azora_payments.errors import PaymentMethodNotFound, StripeUnavailable
from azora_payments.faults import crash_point
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.ids import new_id
from azora_payments.jobs.queue import enqueued_together
from azora_payments.stripe_gateway import (
    Card,
    CardDeclined,
    PaymentError,
    StripeIntent,
    StripePaymentMethod,
    StripeRejected,
)
from azora_payments.telemetry import annotate

logger = logging.getLogger(__name__)

PAYMENT_CREATED = "payment_created"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    amount: int
    currency: str
    payment_method_id: str
    description: str | None
    metadata: dict[str, str]
    save_payment_method: bool
    receipt_email: str | None
    # Set when the payment is an attempt to pay a checkout session (domain/checkout.py).
    checkout_session_id: str | None = None


async def process(
    *,
    keys: IdempotencyKeys,
    stripe: StripeGateway,
    user: User,
    actor: audit.Actor,
    request: PaymentRequest,
    key: str,
    fingerprint: str,
    limits: declines.DeclineLimits,
    client_ip: str | None,
    path: str,
    scope: str | None = None,
) -> Answer:
    """Take the payment under `key`, scoped to the caller (`scope`, default the user's id: a
    checkout session scopes its attempts to itself); `path` names the request the key was made
    for. `client_ip` is the caller's address when it may be counted (it reached us directly or a
    trusted proxy reported it), else None."""
    scope = scope or user.id
    begun = await keys.begin(
        user_id=scope, key=key, method="POST", path=path, fingerprint=fingerprint
    )
    if isinstance(begun, Stored):
        return Answer(begun)
    held = begun
    try:
        async with keys.working(held):
            created: Payment | None = None
            if held.recovery_point != PAYMENT_CREATED:
                created = await _create_payment(
                    keys=keys,
                    stripe=stripe,
                    user=user,
                    actor=actor,
                    request=request,
                    held=held,
                    limits=limits,
                    client_ip=client_ip,
                )
            assert held.payment_id is not None
            with declines.collecting() as recorded:
                answer = await _charge(
                    keys=keys, stripe=stripe, actor=actor, held=held, created=created
                )
            await limits.count(recorded)
    except StripeUnavailable as exc:
        if held.payment_id is not None:
            exc.extra["payment_id"] = held.payment_id
        raise
    if isinstance(answer.outcome, Declined) and held.payment_id is not None:
        # Declined: its intent is closed now, so no client_secret can try other cards on it.
        await intents.close_failed_now(db=keys.db, stripe=stripe, payment_id=held.payment_id)
    if isinstance(answer.outcome, Charged):
        # Only successes are cached: a failure's answer may still be overturned by Stripe.
        await keys.remember(
            user_id=scope,
            key=key,
            fingerprint=fingerprint,
            answer=answer.stored,
            created_at=held.created_at,
        )
    return answer


async def _create_payment(
    *,
    keys: IdempotencyKeys,
    stripe: StripeGateway,
    user: User,
    actor: audit.Actor,
    request: PaymentRequest,
    held: Held,
    limits: declines.DeclineLimits,
    client_ip: str | None,
) -> Payment:
    """Phase 1: the payment row, committed with the key's move to `payment_created`. A new
    attempt after too many declines is refused here, before Stripe is asked anything."""
    async with keys.db.read() as session:
        saved, customer_id = await methods_repo.get_with_customer(
            session, payment_method_id=request.payment_method_id, user_id=user.id
        )
    if saved is not None and saved.user_id != user.id:
        raise PaymentMethodNotFound()
    card: Card | None = None
    if saved is not None and saved.card_fingerprint:
        # Saved by this user, so theirs; its card is on file, kept current by the
        # payment_method.* webhooks. Only a method we do not know is looked up in Stripe.
        card = Card(
            saved.brand, saved.last4, saved.exp_month, saved.exp_year, saved.card_fingerprint
        )
        # The card is known before Stripe is asked anything: all three limits in one look.
        await limits.check(user_id=user.id, ip=client_ip, card=card.fingerprint)
    else:
        await limits.check(user_id=user.id, ip=client_ip)
    if customer_id is None:
        customer_id = await methods.ensure_customer(db=keys.db, stripe=stripe, user=user)
    if card is None:
        method = await methods.retrieve_owned(
            stripe=stripe, payment_method_id=request.payment_method_id, customer_id=customer_id
        )
        card = method.card
        await limits.check(card=card.fingerprint if card else None)
    now = utcnow()
    payment = Payment(
        id=new_id("pay"),
        user_id=user.id,
        status="processing",
        amount=request.amount,
        currency=request.currency,
        amount_refunded=0,
        description=request.description,
        metadata_=request.metadata,
        receipt_email=request.receipt_email or plain_address_or_none(user.email),
        save_payment_method=request.save_payment_method,
        payment_method_id=request.payment_method_id,
        card_brand=card.brand if card else None,
        card_last4=card.last4 if card else None,
        card_exp_month=card.exp_month if card else None,
        card_exp_year=card.exp_year if card else None,
        card_fingerprint=card.fingerprint if card else None,
        client_ip=client_ip,
        stripe_customer_id=customer_id,
        checkout_session_id=request.checkout_session_id,
        disputed=False,
        created_at=now,
        updated_at=now,
    )
    async with keys.phase(held) as phase:
        payments_repo.add(phase.session, payment)
        audit.record(
            phase.session,
            actor=actor,
            action="payment.created",
            payment_id=payment.id,
            details={"amount": request.amount, "currency": request.currency},
        )
        await phase.advance(PAYMENT_CREATED, payment_id=payment.id)
    return payment


async def _charge(
    *,
    keys: IdempotencyKeys,
    stripe: StripeGateway,
    actor: audit.Actor,
    held: Held,
    created: Payment | None,
) -> Answer:
    """Phase 2: Stripe, then the outcome and the answer in one transaction. `created` is the
    payment phase 1 committed in this attempt; a resumed attempt reads it back."""
    payment_id = held.payment_id
    assert payment_id is not None
    annotate(payment_id=payment_id)
    payment = created
    if payment is None:
        async with keys.db.read() as session:
            payment = await payments_repo.get(session, payment_id)
    assert payment is not None
    assert payment.id == payment_id
    if payment.status in FINAL:
        return await _answer_settled(keys=keys, held=held, payment_id=payment_id)
    crash_point("payment.before_stripe")
    declined: CardDeclined | None = None
    rejected: StripeRejected | None = None
    intent = None
    try:
        intent = await stripe.create_payment_intent(
            payment_id=payment.id,
            user_id=payment.user_id,
            amount=payment.amount,
            currency=payment.currency,
            customer_id=payment.stripe_customer_id or "",
            payment_method_id=payment.payment_method_id or "",
            description=payment.description,
            metadata=dict(payment.metadata_ or {}),
            save_payment_method=payment.save_payment_method,
        )
    except CardDeclined as exc:
        declined = exc
    except StripeRejected as exc:
        # Refused as invalid before anything was charged: the payment fails, for good.
        logger.warning(
            "stripe refused payment %s: %s (param %s)", payment.id, exc.stripe_code, exc.param
        )
        rejected = exc
    crash_point("payment.after_stripe")

    async with keys.phase(held) as phase:
        session = phase.session
        payment = await payments_repo.get(session, payment_id, for_update=True)
        assert payment is not None
        # Locked, so its refunds and receipt stay as read (their writers lock it first) and
        # this transaction writes neither: read once for the notification and the answer.
        # The jobs the outcome enqueues (receipt, notification, intent close) go in one insert.
        prefetched = await event_batch.prefetch_locked(session, payment)
        with event_batch.held(session, prefetched):
            async with enqueued_together(session):
                outcome = await _apply_outcome(
                    session,
                    payment,
                    actor=actor,
                    intent=intent,
                    declined=declined,
                    rejected=rejected,
                )
        return Answer(await phase.finish(outcome), outcome)


async def _apply_outcome(
    session: AsyncSession,
    payment: Payment,
    *,
    actor: audit.Actor,
    intent: StripeIntent | None,
    declined: CardDeclined | None,
    rejected: StripeRejected | None,
) -> Outcome:
    """Stripe's answer applied to the locked payment, and what the caller is told of it."""
    if declined is not None:
        # The failure recorded is the error answer's, the one the decline tells (item 4).
        if declined.intent is not None:
            await apply_intent(
                session, payment, declined.intent, actor=actor, failure=declined.error
            )
        await mark_failed(session, payment, declined.error, actor=actor)
    elif rejected is not None:
        await mark_failed(session, payment, _rejection(rejected), actor=actor)
    else:
        assert intent is not None
        await apply_intent(session, payment, intent, actor=actor)
    if payment.status == "succeeded" and payment.save_payment_method:
        await _remember_card(session, payment)
    if declined is not None:
        return _declined(declined.error, payment.id)
    if rejected is not None:
        return _rejected(rejected, payment.id)
    known = event_batch.notification_reads(session, payment.id)
    assert known is not None, "read with the payment's lock"
    refunds, receipt = known
    return Charged(payment_view(payment, refunds=refunds, receipt=receipt))


async def _answer_settled(*, keys: IdempotencyKeys, held: Held, payment_id: str) -> Answer:
    """The key's answer for a payment settled without it; nothing is sent to Stripe."""
    async with keys.phase(held) as phase:
        payment = await payments_repo.get(phase.session, payment_id, for_update=True)
        assert payment is not None
        if payment.status == "succeeded" and payment.save_payment_method:
            await _remember_card(phase.session, payment)
        outcome = await final_answers.payment_answer(phase.session, payment)
        return Answer(await phase.finish(outcome), outcome)


REJECTED_MESSAGE = "The payment could not be made with this payment method."


def _rejection(rejected: StripeRejected) -> PaymentError:
    return PaymentError(rejected.stripe_code or "payment_rejected", None, REJECTED_MESSAGE)


def _rejected(rejected: StripeRejected, payment_id: str) -> Rejected:
    """Stripe's refusal as the caller's: the method is gone (no field), or the request cannot
    be paid this way (on the field Stripe named)."""
    if rejected.stripe_code == "resource_missing" and rejected.param in (None, "payment_method"):
        return Rejected(payment_id=payment_id, field=None, message=REJECTED_MESSAGE)
    field = "amount" if rejected.param == "amount" else "payment_method_id"
    return Rejected(payment_id=payment_id, field=field, message=REJECTED_MESSAGE)


async def _remember_card(session: AsyncSession, payment: Payment) -> None:
    """`save_payment_method`: Stripe attached the card to the customer; list it as saved."""
    card = Card(
        payment.card_brand,
        payment.card_last4,
        payment.card_exp_month,
        payment.card_exp_year,
        payment.card_fingerprint,
    )
    method = StripePaymentMethod(
        id=payment.payment_method_id or "",
        type="card",
        customer=payment.stripe_customer_id,
        card=card,
        created=0,
    )
    row = methods.saved_row(
        method, user_id=payment.user_id, customer_id=payment.stripe_customer_id or ""
    )
    await methods_repo.insert_if_absent(session, row)


def _declined(error: PaymentError, payment_id: str) -> Declined:
    """The decline as the payment records it and the customer is told it
    (`declines.public_failure`)."""
    told = declines.public_failure(error)
    return Declined(
        payment_id=payment_id, code=told.code, decline_code=told.decline_code, message=told.message
    )
