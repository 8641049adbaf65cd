"""Reconciliation: bring our database in line with Stripe when webhooks did not (we were down,
Stripe gave up, an event was lost), through the same settle functions the events use.

One pass, in this order:

1. Events missed while we were down: Stripe's event list since the point up to which the last
   complete catch-up saw everything (a stored cursor, minus a margin for events listed late;
   not the newest recorded event, which a fresh webhook after a downtime would move past the
   gap), recorded and applied exactly like webhooks (source `reconcile`; a duplicate id is a
   no-op).
2. Payments in a non-final state for longer than `reconcile_after_seconds`: their PaymentIntent
   is re-read (or, when we never heard back from Stripe, found by our metadata) and their
   refunds re-listed, then settled under the payment's row lock.
3. Payments with a refund pending for that long: their refunds re-listed and settled.
4. Events whose apply job died without parking them (a lost lease) are parked.

Final means final (API.md): a payment whose request never heard back from Stripe is finished
as that request would have been, never raced. Reconciliation first takes the request's
idempotency key (a retry in flight holding it defers the payment to the next pass), then asks
Stripe both ways (search by our metadata, which lags, and the customer's recent intents) and
applies what it finds: a charge wins; an intent that can still complete (3-D Secure, processing)
is left to finish; an intent that never got anywhere is canceled. With no intent at Stripe, the
payment is `failed` with `stripe_unreachable`. Whenever the payment ends final, the key stores
its final answer (`201`, or `409 payment_failed`), which every later try replays. The threshold
(15 min by default) is far beyond Stripe's timeouts and retries, so the request is over.

A refund whose request never heard back is finished the same way (`refunds.settle_unanswered`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment
from azora_payments.db.repositories import events as events_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, events, final_answers
from azora_payments.domain.idempotency import Held, KeyBusy
from azora_payments.domain.payments import (
    FINAL,
    intent_mismatch,
    mark_failed,
    rank,
    refuse_mismatch,
    settle_intent,
    status_of,
)
from azora_payments.domain.refund_flow import settle_unanswered
from azora_payments.domain.refunds import settle_refund
from azora_payments.errors import ServiceUnavailable
from azora_payments.faults import crash_point
from azora_payments.logs import log_fields
from azora_payments.services import Services
from azora_payments.stripe_gateway import PaymentError, StripeIntent, StripeRefund, StripeRejected

logger = logging.getLogger(__name__)

# Events can appear in Stripe's list a little after their `created` second, and several share
# one second: re-reading this much before the newest recorded one costs a few duplicates only.
EVENT_MARGIN = timedelta(minutes=5)
# With no event recorded yet, how far back to look (Stripe keeps events for 30 days).
FIRST_LOOKBACK = timedelta(days=3)
EVENTS_CURSOR = "stripe.events"
EVENT_PAGE = 100
MAX_EVENT_PAGES = 100
BATCH = 200
# An intent made but never confirmed: nothing can come of it but a charge nobody asked for now.
NEVER_STARTED = frozenset({"requires_payment_method", "requires_confirmation"})
UNREACHABLE = PaymentError(
    code="stripe_unreachable",
    decline_code=None,
    message="We could not reach our payment provider. You were not charged.",
)


@dataclass(slots=True)
class Report:
    changes: list[str] = field(default_factory=list)
    events_listed: int = 0
    events_recorded: int = 0
    payments_checked: int = 0
    refunds_checked: int = 0
    deferred: int = 0
    parked: int = 0
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        summary = (
            f"events: {self.events_listed} listed, {self.events_recorded} new; "
            f"payments checked: {self.payments_checked}; "
            f"refunded payments checked: {self.refunds_checked}; parked: {self.parked}; "
            f"deferred (a request holds the key): {self.deferred}; "
            f"changes: {len(self.changes)}; errors: {len(self.errors)}"
        )
        return [*self.changes, *(f"error: {e}" for e in self.errors), summary]


async def reconcile(services: Services, *, now: datetime | None = None) -> Report:
    """One reconciliation pass (see the module docstring); what it changed."""
    now = now or utcnow()
    report = Report()
    threshold = now - timedelta(seconds=services.settings.reconcile_after_seconds)
    await catch_up_events(services, report=report, now=now)
    await settle_stale_payments(services, report=report, older_than=threshold, now=now)
    await settle_unanswered_refunds(services, report=report, older_than=threshold, now=now)
    await settle_stale_refunds(services, report=report, older_than=threshold)
    async with services.db.transaction() as session:
        parked = await events_repo.park_where_job_dead(session, apply_kind=events.APPLY_KIND)
    report.parked = len(parked)
    logger.info(
        "reconciliation pass",
        extra=log_fields(
            changes=len(report.changes),
            events_recorded=report.events_recorded,
            payments_checked=report.payments_checked,
            errors=len(report.errors),
        ),
    )
    return report


async def catch_up_events(services: Services, *, report: Report, now: datetime) -> None:
    async with services.db.read() as session:
        seen_until = await events_repo.cursor(session, EVENTS_CURSOR)
        newest = await events_repo.newest_created(session) if seen_until is None else None
    start = seen_until or newest
    since = (start - EVENT_MARGIN) if start is not None else (now - FIRST_LOOKBACK)
    listed: list[dict[str, Any]] = []
    starting_after: str | None = None
    complete = False
    listing_started = utcnow()
    try:
        for _ in range(MAX_EVENT_PAGES):
            page = await services.stripe.list_events(
                created_after=int(since.timestamp()),
                limit=EVENT_PAGE,
                starting_after=starting_after,
            )
            listed += page
            if len(page) < EVENT_PAGE:
                complete = True
                break
            starting_after = str(page[-1]["id"])
    except ServiceUnavailable:
        report.errors.append("Stripe unavailable while listing events")
    report.events_listed = len(listed)
    # Stripe lists newest first; apply oldest first, as they happened (any order would do).
    for event in reversed(listed):
        if bool(event.get("livemode")) != services.stripe.livemode:
            continue
        async with services.db.transaction() as session:
            recorded = await events.record_event(session, event, source="reconcile")
        if not recorded:
            continue
        report.events_recorded += 1
        try:
            applied = await events.apply_recorded(services.db, str(event["id"]))
        except Exception as exc:
            # Its queued apply job retries it (and parks it if it keeps failing).
            logger.exception("event apply failed", extra=log_fields(event=event.get("id")))
            report.errors.append(f"{event.get('id')}: {type(exc).__name__}")
            continue
        if applied is not None:
            report.changes += [f"{c} (event {event['id']})" for c in applied.changes]
    if complete:
        # Everything created before this pass began has been listed and recorded.
        async with services.db.transaction() as session:
            await events_repo.move_cursor(session, EVENTS_CURSOR, listing_started)


async def settle_stale_payments(
    services: Services, *, report: Report, older_than: datetime, now: datetime
) -> None:
    async with services.db.transaction() as session:
        stale = await payments_repo.stale_unsettled(session, older_than=older_than, limit=BATCH)
    for payment in stale:
        report.payments_checked += 1
        try:
            if payment.stripe_payment_intent_id is None:
                report.changes += await finish_unanswered(services, payment, now=now)
                continue
            intent = await services.stripe.retrieve_payment_intent(payment.stripe_payment_intent_id)
            refunds = await _refunds_of(services, intent)
        except KeyBusy:
            report.deferred += 1
            continue
        except (ServiceUnavailable, StripeRejected) as exc:
            report.errors.append(f"{payment.id}: {type(exc).__name__}")
            continue
        report.changes += await _settle_to(
            services, payment.id, refunds, intent=intent, reconciled_at=now
        )


async def _settle_to(
    services: Services,
    payment_id: str,
    refunds: list[StripeRefund],
    *,
    intent: StripeIntent | None = None,
    reconciled_at: datetime | None = None,
) -> list[str]:
    """Settle the payment (when `intent` is given) and its refunds to what Stripe answered, under
    the payment's row lock, taken after asking Stripe so that no lock is held over a call."""
    changes: list[str] = []
    async with services.db.transaction() as session:
        locked = await payments_repo.get(session, payment_id, for_update=True)
        if locked is None:
            return changes
        if reconciled_at is not None:
            await payments_repo.mark_reconciled(session, locked.id, at=reconciled_at)
        if intent is not None:
            changes += await settle_intent(session, locked, intent)
        for refund in refunds:
            changes += await settle_refund(session, locked, refund)
    return changes


async def finish_unanswered(services: Services, payment: Payment, *, now: datetime) -> list[str]:
    """A payment whose request never heard back from Stripe (see the module docstring)."""
    taken = await services.idempotency.take_over(payment_id=payment.id)
    held = taken if isinstance(taken, Held) else None
    finished = False
    try:
        crash_point("reconcile.key_taken")
        found = await services.stripe.find_payment_intents_for(
            payment_id=payment.id,
            customer_id=payment.stripe_customer_id,
            created_after=int((payment.created_at - timedelta(minutes=5)).timestamp()),
        )
        ours = [i for i in found if intent_mismatch(payment, i) is None]
        intent = max(ours, key=lambda i: rank(status_of(i)), default=None)
        if intent is not None and intent.status in NEVER_STARTED and not intent.last_payment_error:
            intent = await services.stripe.cancel_payment_intent(intent.id, reason="abandoned")
        refunds = await _refunds_of(services, intent)
        crash_point("reconcile.after_asking")
        changes: list[str] = []
        async with services.db.transaction() as session:
            locked = await payments_repo.get(session, payment.id, for_update=True)
            if locked is None:
                return []
            await payments_repo.mark_reconciled(session, locked.id, at=now)
            for other in found:
                if other not in ours:
                    field = intent_mismatch(locked, other) or "azora_payment_id"
                    refuse_mismatch(session, locked, other, field=field)
            previous = locked.status
            if intent is None or intent.status == "canceled":
                # Stripe has nothing that can still take money: we give up, for good.
                if intent is not None and locked.stripe_payment_intent_id is None:
                    locked.stripe_payment_intent_id = intent.id
                if await mark_failed(session, locked, UNREACHABLE, actor=audit.SYSTEM):
                    why = "no PaymentIntent at Stripe" if intent is None else "intent canceled"
                    changes.append(f"{locked.id}: {previous} -> failed ({why})")
            else:
                changes += await settle_intent(session, locked, intent)
                for refund in refunds:
                    changes += await settle_refund(session, locked, refund)
            if held is not None and locked.status in FINAL:
                finished = await keys_finish(services, session, held, locked)
        return changes
    finally:
        if held is not None and not finished:
            await services.idempotency.release(held)


async def keys_finish(
    services: Services, session: AsyncSession, held: Held, payment: Payment
) -> bool:
    """Store the final answer of the payment's request on its key, in the caller's transaction."""
    answer = await final_answers.payment_answer(session, payment)
    return await services.idempotency.finish(session, held, answer)


async def settle_unanswered_refunds(
    services: Services, *, report: Report, older_than: datetime, now: datetime
) -> None:
    async with services.db.read() as session:
        stale = await refunds_repo.unanswered(session, older_than=older_than, limit=BATCH)
    for refund_id in stale:
        try:
            report.changes += await settle_unanswered(
                keys=services.idempotency, stripe=services.stripe, refund_id=refund_id, now=now
            )
        except KeyBusy:
            report.deferred += 1
        except (ServiceUnavailable, StripeRejected) as exc:
            report.errors.append(f"{refund_id}: {type(exc).__name__}")


async def settle_stale_refunds(services: Services, *, report: Report, older_than: datetime) -> None:
    async with services.db.transaction() as session:
        payment_ids = await refunds_repo.stale_unsettled_payment_ids(
            session, older_than=older_than, limit=BATCH
        )
        payments = [await payments_repo.get(session, pid) for pid in payment_ids]
    for payment in payments:
        if payment is None or payment.stripe_payment_intent_id is None:
            continue
        report.refunds_checked += 1
        try:
            refunds = await services.stripe.list_refunds(payment.stripe_payment_intent_id)
        except (ServiceUnavailable, StripeRejected) as exc:
            report.errors.append(f"{payment.id}: {type(exc).__name__}")
            continue
        report.changes += await _settle_to(services, payment.id, refunds)


async def _refunds_of(services: Services, intent: StripeIntent | None) -> list[StripeRefund]:
    if intent is None or intent.status != "succeeded":
        return []
    return await services.stripe.list_refunds(intent.id)
