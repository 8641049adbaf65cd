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

A payment whose intent Stripe does not have after the threshold is `failed` with
`stripe_unreachable`. That is safe: the intent is created with the idempotency key
`azora:pi:<payment id>` by the request that made the payment; after the threshold (15 min by
default, far beyond Stripe's timeouts and retries) that request is over, and Stripe's search lag
is about a minute. If a client later retries the same request and it does create the intent, the
payment's first intent snapshot sets its status whatever it was (`apply_intent`), and
`succeeded` outranks `failed`, so money taken is always shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azora_payments.db.models import Payment
from azora_payments.db.repositories import events as events_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, events
from azora_payments.domain.payments import mark_failed
from azora_payments.errors import ServiceUnavailable
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
    parked: int = 0
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        summary = (
            f"events: {self.events_listed} listed, {self.events_recorded} new; "
            f"payments checked: {self.payments_checked}; "
            f"refunded payments checked: {self.refunds_checked}; parked: {self.parked}; "
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
            intent = await _intent_of(services, payment)
            refunds = await _refunds_of(services, intent)
        except (ServiceUnavailable, StripeRejected) as exc:
            report.errors.append(f"{payment.id}: {type(exc).__name__}")
            continue
        async with services.db.transaction() as session:
            locked = await payments_repo.get(session, payment.id, for_update=True)
            if locked is None:
                continue
            await payments_repo.mark_reconciled(session, locked.id, at=now)
            if intent is None:
                previous = locked.status
                if locked.stripe_payment_intent_id is None and await mark_failed(
                    session, locked, UNREACHABLE, actor=audit.SYSTEM
                ):
                    report.changes.append(
                        f"{locked.id}: {previous} -> failed (no PaymentIntent at Stripe)"
                    )
                continue
            report.changes += await events.settle_intent(session, locked, intent)
            for refund in refunds:
                report.changes += await events.settle_refund(session, locked, refund)


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
        async with services.db.transaction() as session:
            locked = await payments_repo.get(session, payment.id, for_update=True)
            if locked is None:
                continue
            for refund in refunds:
                report.changes += await events.settle_refund(session, locked, refund)


async def _intent_of(services: Services, payment: Payment) -> StripeIntent | None:
    if payment.stripe_payment_intent_id is not None:
        return await services.stripe.retrieve_payment_intent(payment.stripe_payment_intent_id)
    # Stripe never answered the request that made it: look for the intent by our metadata.
    return await services.stripe.find_payment_intent_for(
        payment_id=payment.id,
        customer_id=payment.stripe_customer_id,
        created_after=int((payment.created_at - timedelta(minutes=5)).timestamp()),
    )


async def _refunds_of(services: Services, intent: StripeIntent | None) -> list[StripeRefund]:
    if intent is None or intent.status != "succeeded":
        return []
    return await services.stripe.list_refunds(intent.id)
