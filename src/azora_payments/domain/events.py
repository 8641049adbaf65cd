"""Stripe events: verified and recorded on arrival, then applied exactly once, by a job, through
the `settle_*` functions that reconciliation reuses. Each state machine lives with its object
(`payments.settle_intent`, `refunds.settle_refund`, `disputes.settle_dispute`,
`methods.settle_payment_method`); this module finds the payment an event is about and picks the
handler from one table (`HANDLERS`, by event type).

    webhook ─► verify (raw body, every secret) ─► [event row + apply job, one transaction] ─► 200
    job     ─► lock event, lock payment ─► settle_* ─► [changes + event `applied`, one transaction]

Ordering rules, so that any order, duplication or delay of events ends in the same state:

- a payment's status only moves forward (`domain.payments.apply_intent`);
- a refund's status only moves forward, its amount is Stripe's, and `amount_refunded` is
  recomputed from the refund rows, never by adding events up (`domain.refunds`);
- `disputed` only becomes true; `dispute_status` only moves forward (`domain.disputes`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment, WebhookEvent
from azora_payments.db.repositories import events as events_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import event_batch
from azora_payments.domain.disputes import settle_dispute
from azora_payments.domain.methods import settle_payment_method
from azora_payments.domain.payments import intent_mismatch, refuse_mismatch, settle_intent
from azora_payments.domain.refunds import settle_refund
from azora_payments.errors import InternalError, InvalidSignature
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.jobs import wakeup
from azora_payments.jobs.queue import enqueue, enqueued_together, kind_named
from azora_payments.jobs.registry import JobKind
from azora_payments.logs import log_fields
from azora_payments.metrics import WEBHOOK_EVENTS
from azora_payments.stripe_gateway import (
    StripeRefund,
    intent_from_object,
    refund_from_object,
)

logger = logging.getLogger(__name__)

APPLY_KIND = "stripe.event.apply"


# ------------------------------------------------------------------ ingest


async def ingest(
    *,
    db: Database,
    stripe: StripeGateway,
    secrets: list[str],
    payload: bytes,
    signature: str | None,
) -> str:
    """Verify and durably record one delivery; what happened to it: `recorded`, `duplicate`
    or `ignored_livemode`. Never waits on Stripe and never applies the event."""
    if not signature:
        WEBHOOK_EVENTS.labels("unknown", "invalid_signature").inc()
        raise InvalidSignature()
    try:
        event = stripe.verify_event(payload, signature, secrets)
    except InvalidSignature:
        WEBHOOK_EVENTS.labels("unknown", "invalid_signature").inc()
        raise
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        WEBHOOK_EVENTS.labels("unknown", "invalid_signature").inc()
        raise InvalidSignature("The body is not a Stripe event.")
    if bool(event.get("livemode")) != stripe.livemode:
        # A test-mode event at a live endpoint (or the reverse): never ours to apply.
        WEBHOOK_EVENTS.labels(event_type, "livemode_mismatch").inc()
        logger.info("stripe event ignored: livemode mismatch", extra=log_fields(event=event_id))
        return "ignored_livemode"
    try:
        if db.dialect == "postgresql":
            # One statement, event and job, committed alone: one round trip, no unit of work,
            # and no SQLAlchemy in between (most of the ingest's CPU went there).
            async with db.driver_statement() as connection:
                recorded = await events_repo.record_with_job(
                    connection,
                    _event_values(event, source="webhook", now=utcnow()),
                    payload_json=payload.decode("utf-8"),
                    job_kind=APPLY_KIND,
                    max_attempts=_apply_kind().max_attempts,
                )
        else:
            async with db.transaction() as session:
                recorded = await record_event(session, event, source="webhook")
    except Exception:
        # Not recorded means not acknowledged: a 500 makes Stripe deliver it again.
        WEBHOOK_EVENTS.labels(event_type, "record_failed").inc()
        logger.exception("stripe event not recorded", extra=log_fields(event=event_id))
        raise InternalError("The event could not be recorded.") from None
    if recorded:
        wakeup.poke(db)
    outcome = "recorded" if recorded else "duplicate"
    WEBHOOK_EVENTS.labels(event_type, outcome).inc()
    return outcome


async def record_event(session: AsyncSession, event: dict[str, Any], *, source: str) -> bool:
    """Record `event` and queue its apply job in the caller's transaction; False when its id was
    already recorded (a duplicate: nothing queued)."""
    inserted = await events_repo.insert(session, _event_values(event, source=source, now=utcnow()))
    if inserted:
        await enqueue(
            session, kind=APPLY_KIND, payload={"event_id": event["id"]}, unique_key=event["id"]
        )
    return inserted


def _event_values(event: dict[str, Any], *, source: str, now: datetime) -> dict[str, Any]:
    """The `webhook_events` row of a verified event."""
    obj = _object(event)
    return {
        "id": event["id"],
        "type": str(event["type"])[:64],
        "livemode": bool(event.get("livemode")),
        "api_version": _str(event.get("api_version"), 32),
        "stripe_created": datetime.fromtimestamp(int(event.get("created") or 0), UTC),
        "object_id": _str(obj.get("id"), 255),
        "payload": event,
        "status": events_repo.RECEIVED,
        "attempts": 0,
        "source": source,
        "received_at": now,
    }


def _apply_kind() -> JobKind:
    # The kind's settings (attempts) as `enqueue` would find them; its module may be unimported
    # in a server process, so it is looked up as `enqueue` does.
    return kind_named(APPLY_KIND)


# ------------------------------------------------------------------ apply


@dataclass(slots=True)
class Applied:
    """What applying one event did: `applied` (it concerned one of ours) or `ignored`."""

    status: str
    changes: list[str] = field(default_factory=list)
    reason: str | None = None


async def apply_recorded(db: Database, event_id: str) -> Applied | None:
    """Apply a recorded event, once: its effects and its `applied` mark commit together, and an
    event already applied (or ignored) is left alone. None when no such event is recorded."""
    async with db.transaction() as session:
        done = await apply_recorded_in(session, event_id)
    if done is None:
        return None
    report_applied(done)
    return done.result


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """What `apply_recorded_in` did to one event; `report_applied` it once it committed."""

    event_id: str
    event_type: str | None  # None: it was applied (or ignored) before, nothing to report
    result: Applied


async def apply_recorded_in(session: AsyncSession, event_id: str) -> AppliedEvent | None:
    """`apply_recorded`'s work in the caller's transaction (the worker applies a batch of
    events in one); None when no such event is recorded."""
    return await _apply_row(
        session, event_id, await events_repo.get(session, event_id, for_update=True)
    )


async def apply_batch_in(session: AsyncSession, event_ids: Sequence[str]) -> list[AppliedEvent]:
    """`apply_recorded_in` for several events in the caller's transaction, in the order given,
    with the same effects, set-based where that changes nothing: the events are locked in one
    statement, then the payments they name (`event_batch`), and the follow-up jobs are written
    together at the end (`enqueued_together`). The ORM's unit of work then flushes the audit
    records, payments, notifications and events as a few multi-row statements at the end, as
    no query in between asks it to flush."""
    rows = {row.id: row for row in await events_repo.lock_many(session, event_ids)}
    intents = {
        _intent_of(row.payload) for row in rows.values() if row.status not in events_repo.SETTLED
    }
    prefetched = await event_batch.prefetch(session, sorted(i for i in intents if i))
    done: list[AppliedEvent] = []
    async with enqueued_together(session):
        with event_batch.held(session, prefetched):
            for event_id in event_ids:
                applied = await _apply_row(session, event_id, rows.get(event_id))
                if applied is not None:
                    done.append(applied)
    return done


def _intent_of(event: dict[str, Any]) -> str | None:
    """The PaymentIntent an event's object is or names, by which its payment is found first."""
    obj = _object(event)
    if str(event.get("type")).startswith("payment_intent."):
        return _id_of(obj.get("id"))
    return _id_of(obj.get("payment_intent"))


async def _apply_row(
    session: AsyncSession, event_id: str, row: WebhookEvent | None
) -> AppliedEvent | None:
    if row is None:
        logger.warning("stripe event to apply is not recorded", extra=log_fields(event=event_id))
        return None
    if row.status in events_repo.SETTLED:
        return AppliedEvent(event_id, None, Applied(row.status, reason="already done"))
    result = await apply_event(session, row.payload)
    row.status = result.status
    row.attempts += 1
    row.applied_at = utcnow()
    row.last_error = None
    return AppliedEvent(event_id, row.type, result)


def report_applied(done: AppliedEvent) -> None:
    """Count and log an event applied by a transaction that committed."""
    if done.event_type is None:
        return
    WEBHOOK_EVENTS.labels(done.event_type, done.result.status).inc()
    if done.result.status == events_repo.IGNORED:
        logger.info(
            "stripe event ignored",
            extra=log_fields(event=done.event_id, type=done.event_type, reason=done.result.reason),
        )


async def note_failure(db: Database, event_id: str, *, error: str, park: bool) -> None:
    """An apply attempt failed (its own transaction rolled back): count it, and park the event
    when the queue will not try again."""
    async with db.transaction() as session:
        await events_repo.note_failure(
            session, event_id=event_id, error=error, park=park, now=utcnow()
        )
    if park:
        logger.error("stripe event parked", extra=log_fields(event=event_id))


async def apply_event(session: AsyncSession, event: dict[str, Any]) -> Applied:
    """The one place an event's type decides what changes, in the caller's transaction."""
    event_type = str(event.get("type"))
    handler = HANDLERS.get(event_type)
    if handler is None:
        return Applied(events_repo.IGNORED, reason=f"type {event_type} is not handled")
    created = datetime.fromtimestamp(int(event.get("created") or 0), UTC)
    return await handler(session, event_type, _object(event), created)


# What an event type's handler gets: the session, the type, the event's object and its time.
Handler = Callable[[AsyncSession, str, dict[str, Any], datetime], Awaitable[Applied]]


async def _on_intent(
    session: AsyncSession, event_type: str, obj: dict[str, Any], created: datetime
) -> Applied:
    intent = intent_from_object(obj)
    payment = await find_payment(
        session, intent_id=intent.id, payment_id=intent.metadata.get("azora_payment_id")
    )
    if payment is None:
        return _unknown(obj)
    mismatch = intent_mismatch(payment, intent)
    if mismatch is not None:
        refuse_mismatch(session, payment, intent, field=mismatch)
        return Applied(
            events_repo.IGNORED, reason=f"{intent.id} does not match {payment.id}: {mismatch}"
        )
    return Applied(events_repo.APPLIED, await settle_intent(session, payment, intent))


async def _on_refund(
    session: AsyncSession, event_type: str, obj: dict[str, Any], created: datetime
) -> Applied:
    event_batch.refunds_changed(session)
    refund = refund_from_object(obj)
    payment = await _payment_of_refund(session, refund)
    if payment is None:
        return _unknown(obj)
    return Applied(events_repo.APPLIED, await settle_refund(session, payment, refund))


async def _on_charge_refunded(
    session: AsyncSession, event_type: str, obj: dict[str, Any], created: datetime
) -> Applied:
    event_batch.refunds_changed(session)
    payment = await find_payment(
        session,
        intent_id=_id_of(obj.get("payment_intent")),
        payment_id=(obj.get("metadata") or {}).get("azora_payment_id"),
        charge_id=_id_of(obj.get("id")),
    )
    if payment is None:
        return _unknown(obj)
    if payment.stripe_charge_id is None:
        payment.stripe_charge_id = _id_of(obj.get("id"))
    changes: list[str] = []
    # Newer API versions leave `refunds` out of the Charge; then the refund.* events (and
    # reconciliation) bring the refunds, and this event has nothing of its own to add.
    for item in (obj.get("refunds") or {}).get("data") or []:
        changes += await settle_refund(session, payment, refund_from_object(item))
    return Applied(events_repo.APPLIED, changes)


async def _on_dispute(
    session: AsyncSession, event_type: str, obj: dict[str, Any], created: datetime
) -> Applied:
    payment = await find_payment(
        session,
        intent_id=_id_of(obj.get("payment_intent")),
        charge_id=_id_of(obj.get("charge")),
    )
    if payment is None:
        return _unknown(obj)
    changes = await settle_dispute(
        session, payment, dispute_id=str(obj.get("id")), status=str(obj.get("status"))
    )
    return Applied(events_repo.APPLIED, changes)


async def _on_payment_method(
    session: AsyncSession, event_type: str, obj: dict[str, Any], created: datetime
) -> Applied:
    changes = await settle_payment_method(session, event_type, obj, created=created)
    if changes is None:
        return Applied(
            events_repo.IGNORED, reason=f"payment method {obj.get('id')} is not saved here"
        )
    return Applied(events_repo.APPLIED, changes)


HANDLERS: dict[str, Handler] = {
    "payment_intent.succeeded": _on_intent,
    "payment_intent.payment_failed": _on_intent,
    "payment_intent.processing": _on_intent,
    "payment_intent.requires_action": _on_intent,
    "payment_intent.canceled": _on_intent,
    "refund.created": _on_refund,
    "refund.updated": _on_refund,
    "refund.failed": _on_refund,
    "charge.refund.updated": _on_refund,
    "charge.refunded": _on_charge_refunded,
    "charge.dispute.created": _on_dispute,
    "charge.dispute.updated": _on_dispute,
    "charge.dispute.closed": _on_dispute,
    "payment_method.attached": _on_payment_method,
    "payment_method.detached": _on_payment_method,
    "payment_method.updated": _on_payment_method,
}
HANDLED = frozenset(HANDLERS)


def _unknown(obj: dict[str, Any]) -> Applied:
    return Applied(events_repo.IGNORED, reason=f"no payment of ours for {obj.get('id')}")


async def find_payment(
    session: AsyncSession,
    *,
    intent_id: str | None = None,
    payment_id: str | None = None,
    charge_id: str | None = None,
) -> Payment | None:
    """The payment an object belongs to, locked: by PaymentIntent id, then by the
    `azora_payment_id` we put in its metadata (an event that beats our own record of the intent
    id), then by charge id."""
    if intent_id:
        payment = event_batch.locked_by_intent(session, intent_id)
        if payment is None:
            payment = await payments_repo.get_by_intent(session, intent_id, for_update=True)
        if payment is not None:
            return payment
    if payment_id:
        payment = await payments_repo.get(session, payment_id, for_update=True)
        # A different intent claiming our payment id is not ours to apply.
        if payment is not None and (
            intent_id is None or payment.stripe_payment_intent_id in (None, intent_id)
        ):
            return payment
    if charge_id:
        return await events_repo.payment_by_charge(session, charge_id, for_update=True)
    return None


async def _payment_of_refund(session: AsyncSession, refund: StripeRefund) -> Payment | None:
    payment = await find_payment(session, intent_id=refund.payment_intent)
    if payment is not None:
        return payment
    ours = refund.metadata.get("azora_refund_id")
    if ours:
        row = await refunds_repo.get(session, ours)
        if row is not None:
            payment = await payments_repo.get(session, row.payment_id, for_update=True)
            # Our refund id on another charge is not our refund (another integration's label).
            if payment is not None and refund.charge in (None, payment.stripe_charge_id):
                return payment
    return await find_payment(session, charge_id=refund.charge)


# ------------------------------------------------------------------ helpers


def _object(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def _id_of(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _str(value: Any, limit: int) -> str | None:
    return str(value)[:limit] if value is not None else None
