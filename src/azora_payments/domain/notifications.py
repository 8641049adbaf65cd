"""Notifications to the product's own backend: what happened to a payment or a refund, signed
as Stripe signs its webhooks, delivered at least once from the durable queue.

A notification is written in the transaction of the change it tells, with its delivery job, so
a change never goes untold and an untold change never happened. Operators can list them all,
oldest first, for a backend that was down to catch up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Notification, Payment, Receipt, Refund
from azora_payments.db.repositories import notifications as notifications_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain.statuses import PaymentStatus, RefundStatus
from azora_payments.domain.views import payment_view, refund_view
from azora_payments.ids import new_id
from azora_payments.jobs import enqueue
from azora_payments.pagination import decode_cursor, encode_cursor

DELIVER = "notification.deliver"
SIGNATURE_HEADER = "Azora-Signature"

PAYMENT_TYPES: dict[str, str] = {
    PaymentStatus.SUCCEEDED: "payment.succeeded",
    PaymentStatus.FAILED: "payment.failed",
    PaymentStatus.REQUIRES_ACTION: "payment.requires_action",
    PaymentStatus.CANCELED: "payment.canceled",
}
REFUND_TYPES: dict[str, str] = {
    RefundStatus.SUCCEEDED: "refund.succeeded",
    RefundStatus.FAILED: "refund.failed",
}


async def tell(
    session: AsyncSession, *, type: str, payment_id: str, data: dict[str, Any]
) -> Notification:
    """Record a notification and queue its delivery, in the caller's transaction. (Without a
    NOTIFY_URL the delivery job finds nowhere to send and ends; the list still has it.)"""
    notification = Notification(
        id=new_id("ntf"),
        type=type,
        payment_id=payment_id,
        data=data,
        created_at=utcnow(),
        attempts=0,
    )
    notifications_repo.add(session, notification)
    # A fresh id cannot collide: a plain insert, not the costlier insert-if-absent.
    await enqueue(session, kind=DELIVER, payload={"id": notification.id})
    return notification


def payment_data(
    payment: Payment, *, refunds: Sequence[Refund], receipt: Receipt | None
) -> dict[str, Any]:
    # The product's backend acts for its users: it is told whose payment this is. It is never
    # told the client_secret (API.md): that belongs to the customer's browser alone, and a
    # notification is kept, listed and re-sent long after the secret stopped mattering.
    view = payment_view(payment, refunds=refunds, receipt=receipt)
    return {**view, "client_secret": None, "user_id": payment.user_id}


def refund_data(refund: Refund, payment: Payment) -> dict[str, Any]:
    return {**refund_view(refund), "user_id": payment.user_id}


def envelope(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.id,
        "type": notification.type,
        "created_at": notification.created_at.isoformat().replace("+00:00", "Z"),
        "data": notification.data,
    }


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`: Stripe's scheme."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def body_of(notification: Notification) -> bytes:
    return json.dumps(envelope(notification), separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class NotificationPage:
    data: Sequence[dict[str, Any]]
    has_more: bool
    next_cursor: str | None


async def listing(*, db: Database, limit: int, cursor: str | None) -> NotificationPage:
    """Oldest first. Unlike history, a feed's last page still carries a cursor (after its last
    item, or the one given when it is empty), so a backend can come back later for what is new."""
    after = decode_cursor(cursor, str) if cursor else None
    async with db.read() as session:
        rows = await notifications_repo.page(session, limit=limit + 1, after=after)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if page else cursor
    return NotificationPage(
        data=[envelope(n) for n in page], has_more=len(rows) > limit, next_cursor=next_cursor
    )
