"""What the console pages show, read through the repositories (keyset and indexed): a page of
payments, one payment with everything that happened to it, and the operators' work lists."""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azora_payments.db.models import (
    AuditRecord,
    Job,
    Notification,
    Payment,
    Receipt,
    Refund,
    RefundApproval,
    WebhookEvent,
)
from azora_payments.db.repositories import audit as audit_repo
from azora_payments.db.repositories import console as console_repo
from azora_payments.db.repositories import events as events_repo
from azora_payments.db.repositories import jobs as jobs_repo
from azora_payments.db.repositories import notifications as notifications_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.repositories import stats
from azora_payments.db.repositories.payments import HistoryFilter
from azora_payments.db.session import Database
from azora_payments.domain import money
from azora_payments.domain import refunds as refunds_domain
from azora_payments.domain.statuses import JobStatus, PaymentStatus, RefundStatus
from azora_payments.pagination import decode_cursor, encode_cursor

PAGE_SIZE = 25
LIST_SIZE = 100
EMAIL_ACTIONS = frozenset({"receipt.emailed", "refund.emailed"})


@dataclass(frozen=True, slots=True)
class PaymentPage:
    payments: Sequence[Payment]
    next_cursor: str | None


async def payment_page(
    *, db: Database, where: HistoryFilter, cursor: str | None, limit: int = PAGE_SIZE
) -> PaymentPage:
    after = decode_cursor(cursor, str) if cursor else None
    async with db.read() as session:
        rows = await payments_repo.page(session, where=where, limit=limit + 1, after=after)
    page = list(rows[:limit])
    more = len(rows) > limit
    return PaymentPage(page, encode_cursor(page[-1].created_at, page[-1].id) if more else None)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    kind: str  # audit, stripe, notification, email
    title: str
    actor: str | None = None
    detail: str | None = None


@dataclass(slots=True)
class PaymentDetail:
    payment: Payment
    refunds: list[Refund]
    receipt: Receipt | None
    approvals: Sequence[RefundApproval]
    refundable: int
    timeline: list[TimelineEntry] = field(default_factory=list)


def _details(details: dict[str, Any], currency: str) -> str | None:
    shown = {k: v for k, v in details.items() if k not in ("channel", "currency") and v is not None}
    for key in ("amount", "amount_refunded"):
        if isinstance(shown.get(key), int):
            shown[key] = money.format_amount(shown[key], currency)
    # Sorted: PostgreSQL's JSONB keeps keys in its own order, SQLite in the written one.
    text = ", ".join(f"{k}: {v}" for k, v in sorted(shown.items()))
    channel = details.get("channel")
    if channel:
        text = f"{text} (via {channel})" if text else f"via {channel}"
    return text or None


def _audit_entry(record: AuditRecord, currency: str) -> TimelineEntry:
    kind = "email" if record.action in EMAIL_ACTIONS else "audit"
    return TimelineEntry(
        at=record.at,
        kind=kind,
        title=record.action,
        actor=record.actor,
        detail=_details(record.details or {}, currency),
    )


def _event_entry(event: WebhookEvent) -> TimelineEntry:
    detail = f"{event.id} · {event.status}"
    if event.last_error:
        detail += f" · {event.last_error.splitlines()[0][:200]}"
    return TimelineEntry(
        at=event.received_at, kind="stripe", title=event.type, actor=event.source, detail=detail
    )


def _notification_entry(notification: Notification) -> TimelineEntry:
    if notification.delivered_at is not None:
        state = f"delivered {notification.delivered_at:%Y-%m-%d %H:%M:%S} UTC"
    elif notification.attempts:
        state = f"not delivered after {notification.attempts} attempt(s)"
    else:
        state = "waiting for delivery"
    return TimelineEntry(
        at=notification.created_at,
        kind="notification",
        title=notification.type,
        detail=f"{notification.id} · {state}",
    )


async def payment_detail(*, db: Database, payment_id: str) -> PaymentDetail | None:
    async with db.read() as session:
        payment = await payments_repo.get(session, payment_id)
        if payment is None:
            return None
        refunds = (await payments_repo.refunds_of(session, [payment.id])).get(payment.id, [])
        receipt = (await payments_repo.receipts_of(session, [payment.id])).get(payment.id)
        approvals = await console_repo.approvals_of(session, payment.id)
        records = (await audit_repo.for_payments(session, [payment.id]))[payment.id]
        objects = [
            oid
            for oid in (
                payment.stripe_payment_intent_id,
                payment.stripe_charge_id,
                *(r.stripe_refund_id for r in refunds),
            )
            if oid
        ]
        stripe_events = await events_repo.about_objects(session, objects)
        notifications = await notifications_repo.of_payment(session, payment.id)
    timeline = [
        *(_audit_entry(r, payment.currency) for r in records),
        *(_event_entry(e) for e in stripe_events),
        *(_notification_entry(n) for n in notifications),
    ]
    timeline.sort(key=lambda entry: entry.at)
    return PaymentDetail(
        payment=payment,
        refunds=refunds,
        receipt=receipt,
        approvals=approvals,
        refundable=refunds_domain.refundable(payment, refunds),
        timeline=timeline,
    )


# ---------------------------------------------------------------- work lists


async def disputes(*, db: Database, cursor: str | None) -> PaymentPage:
    after = decode_cursor(cursor, str) if cursor else None
    async with db.read() as session:
        rows = await payments_repo.disputed(session, limit=PAGE_SIZE + 1, after=after)
    page = list(rows[:PAGE_SIZE])
    more = len(rows) > PAGE_SIZE
    return PaymentPage(page, encode_cursor(page[-1].updated_at, page[-1].id) if more else None)


@dataclass(frozen=True, slots=True)
class EventRow:
    event: WebhookEvent
    payment_id: str | None


async def _payment_of_object(session: Any, object_id: str | None) -> str | None:
    if not object_id:
        return None
    payment: Payment | None = None
    if object_id.startswith("pi_"):
        payment = await payments_repo.get_by_intent(session, object_id)
    elif object_id.startswith(("ch_", "py_")):
        payment = await events_repo.payment_by_charge(session, object_id)
    return payment.id if payment is not None else None


async def parked_events(*, db: Database) -> list[EventRow]:
    async with db.read() as session:
        rows = await events_repo.listing(session, status=events_repo.PARKED, limit=LIST_SIZE)
        return [EventRow(row, await _payment_of_object(session, row.object_id)) for row in rows]


@dataclass(frozen=True, slots=True)
class JobRow:
    job: Job
    payment_id: str | None


async def _payment_of_job(session: Any, payload: Any) -> str | None:
    """The payment a job is about, from the ids its payload carries (jobs take ids)."""
    if not isinstance(payload, dict):
        return None
    if payload.get("payment_id"):
        return str(payload["payment_id"])
    if payload.get("receipt_id"):
        receipt = await receipts_repo.get(session, str(payload["receipt_id"]))
        return receipt.payment_id if receipt is not None else None
    if payload.get("refund_id"):
        refund = await refunds_repo.get(session, str(payload["refund_id"]))
        return refund.payment_id if refund is not None else None
    if payload.get("event_id"):
        event = await events_repo.get(session, str(payload["event_id"]))
        return await _payment_of_object(session, event.object_id if event else None)
    if payload.get("id"):
        notification = await notifications_repo.get(session, str(payload["id"]))
        return notification.payment_id if notification is not None else None
    return None


async def dead_jobs(*, db: Database) -> list[JobRow]:
    async with db.read() as session:
        rows = await jobs_repo.list_jobs(session, status=JobStatus.DEAD, limit=LIST_SIZE)
        return [JobRow(job, await _payment_of_job(session, job.payload)) for job in rows]


async def failed_notifications(*, db: Database) -> Sequence[Notification]:
    async with db.read() as session:
        return await notifications_repo.undelivered(session, tried=True, limit=LIST_SIZE)


async def pending_approvals(*, db: Database) -> Sequence[RefundApproval]:
    async with db.read() as session:
        return await console_repo.pending_approvals(session, limit=LIST_SIZE)


# ---------------------------------------------------------------- the overview


@dataclass(frozen=True, slots=True)
class CurrencyLine:
    currency: str
    count: int
    succeeded: int
    volume: int  # succeeded amount
    refunded: int  # succeeded refunds

    @property
    def success_rate(self) -> float | None:
        settled = self.count
        return None if settled == 0 else self.succeeded / settled


@dataclass(frozen=True, slots=True)
class Window:
    label: str
    as_of: datetime
    lines: list[CurrencyLine]
    declines: list[tuple[str, int]]
    refunds: int
    attempts: int
    succeeded: int
    failed: int

    @property
    def success_rate(self) -> float | None:
        decided = self.succeeded + self.failed
        return None if decided == 0 else self.succeeded / decided


@dataclass(frozen=True, slots=True)
class Overview:
    windows: list[Window]
    hours: list[tuple[datetime, int, int]]  # hour, succeeded, failed
    open_disputes: int
    parked_events: int
    dead_jobs: int
    queue_depth: int
    oldest_due: datetime | None
    oldest_waiting_event: datetime | None
    newest_event: datetime | None
    pending_approvals: int
    now: datetime


def _window(
    label: str,
    now: datetime,
    groups: list[stats.Group],
    refunds: list[stats.Total],
    declines: list[tuple[str, int]],
) -> Window:
    by_currency: dict[str, dict[str, int]] = {}

    def line_of(currency: str) -> dict[str, int]:
        return by_currency.setdefault(
            currency, {"count": 0, "succeeded": 0, "volume": 0, "refunded": 0}
        )

    for g in groups:
        line = line_of(g.currency)
        line["count"] += g.count
        if g.status == PaymentStatus.SUCCEEDED:
            line["succeeded"] += g.count
            line["volume"] += g.amount
    for r in refunds:
        if r.status == RefundStatus.SUCCEEDED:
            line_of(r.currency)["refunded"] += r.amount
    lines = [
        CurrencyLine(currency=c, **values)
        for c, values in sorted(by_currency.items(), key=lambda kv: -kv[1]["count"])
    ]
    return Window(
        label=label,
        as_of=now,
        lines=lines,
        declines=declines,
        refunds=sum(r.count for r in refunds),
        attempts=sum(g.count for g in groups),
        succeeded=sum(g.count for g in groups if g.status == PaymentStatus.SUCCEEDED),
        failed=sum(g.count for g in groups if g.status == PaymentStatus.FAILED),
    )


async def _read_window(
    session: Any, label: str, since: datetime, now: datetime
) -> tuple[Window, list[stats.Group]]:
    groups = await stats.payment_groups(session, since=since)
    refunds = await stats.refund_totals(session, since=since)
    declines = await stats.declines(session, since=since)
    return _window(label, now, groups, refunds, declines), groups


# The 30-day figures sum ~30 times more payments than the day's: each process keeps them this
# long (the page says "as of"), so the overview stays fast on millions of payments.
LONG_WINDOW_SECONDS = 60.0
_long_windows: weakref.WeakKeyDictionary[Database, tuple[float, Window]] = (
    weakref.WeakKeyDictionary()
)


async def _long_window(session: Any, db: Database, now: datetime) -> Window:
    cached = _long_windows.get(db)
    if cached is not None and time.monotonic() - cached[0] < LONG_WINDOW_SECONDS:
        return cached[1]
    window, _ = await _read_window(session, "Last 30 days", now - timedelta(days=30), now)
    _long_windows[db] = (time.monotonic(), window)
    return window


async def overview(*, db: Database, now: datetime) -> Overview:
    day_start = now - timedelta(hours=24)
    async with db.read() as session:
        day, groups = await _read_window(session, "Last 24 hours", day_start, now)
        windows = [day, await _long_window(session, db, now)]
        waiting = await stats.attention(session, now=now)
    first_hour = day_start.replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
    buckets: dict[str, list[int]] = {}
    for offset in range(25):
        hour = first_hour + timedelta(hours=offset)
        buckets[hour.strftime("%Y-%m-%dT%H")] = [0, 0]
    for g in groups:
        if g.hour in buckets and g.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
            buckets[g.hour][0 if g.status == PaymentStatus.SUCCEEDED else 1] += g.count
    hours = [
        (datetime.strptime(k, "%Y-%m-%dT%H").replace(tzinfo=UTC), s, f)
        for k, (s, f) in buckets.items()
    ]
    return Overview(
        windows=windows,
        hours=hours,
        open_disputes=waiting.open_disputes,
        parked_events=waiting.parked_events,
        dead_jobs=waiting.dead_jobs,
        queue_depth=waiting.queue_depth,
        oldest_due=waiting.oldest_due,
        oldest_waiting_event=waiting.oldest_waiting_event,
        newest_event=waiting.newest_event,
        pending_approvals=waiting.pending_approvals,
        now=now,
    )
