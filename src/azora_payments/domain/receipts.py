"""Receipts: issued once per succeeded payment with a number sequential per year, rendered from
the database's current state (refunds included), and e-mailed from the durable queue."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.auth import User
from azora_payments.config import Settings
from azora_payments.db.models import Payment, Receipt
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import audit
from azora_payments.domain.audit import Actor
from azora_payments.errors import Forbidden, PaymentNotFound, ReceiptNotReady
from azora_payments.ids import new_id
from azora_payments.jobs.queue import enqueue
from azora_payments.pdf import ReceiptDocument, RefundLine
from azora_payments.ratelimit import RateLimiter

ISSUE = "receipt.issue"
EMAIL = "receipt.email"
# Refunds that take money back (or will): listed on the receipt and counted in the net amount.
SHOWN_REFUNDS = ("succeeded", "pending")


def receipt_number(year: int, sequence: int) -> str:
    return f"R-{year}-{sequence:06d}"


def email_message_id(receipt: Receipt, *, sender: str, resend: str | None) -> str:
    """Derived from the receipt id (and the re-send), so a copy sent twice is recognisable."""
    domain = sender.rpartition("@")[2] or "azora.invalid"
    return f"<{receipt.id}.{resend or 'issued'}@{domain}>"


async def enqueue_issue(session: AsyncSession, payment: Payment) -> None:
    """Queue the receipt of a payment that just succeeded, in the transaction that says so."""
    await enqueue(
        session, kind=ISSUE, payload={"payment_id": payment.id}, unique_key=f"receipt:{payment.id}"
    )


async def issue(
    session: AsyncSession, *, payment_id: str, now: datetime | None = None
) -> Receipt | None:
    """The payment's receipt, issued now if it has none; None when the payment has not succeeded.

    The payment row is locked first, so two issuers of one payment queue here and the second
    finds the first's receipt before it takes a number: no number is taken in vain.
    """
    payment = await payments_repo.get(session, payment_id, for_update=True)
    if payment is None or payment.status != "succeeded":
        return None
    existing = await receipts_repo.of_payment(session, payment_id)
    if existing is not None:
        return existing
    issued_at = now or utcnow()
    sequence = await receipts_repo.next_number(session, issued_at.year)
    receipt = Receipt(
        id=new_id("rcpt"),
        payment_id=payment.id,
        number=receipt_number(issued_at.year, sequence),
        year=issued_at.year,
        sequence=sequence,
        amount=payment.amount,
        currency=payment.currency,
        issued_at=issued_at,
    )
    receipts_repo.add(session, receipt)
    audit.record(
        session,
        actor=audit.SYSTEM,
        action="receipt.issued",
        payment_id=payment.id,
        details={"receipt_id": receipt.id, "number": receipt.number},
    )
    await enqueue(
        session,
        kind=EMAIL,
        payload={"receipt_id": receipt.id},
        unique_key=f"receipt-email:{receipt.id}",
    )
    return receipt


async def document(
    session: AsyncSession, *, receipt: Receipt, payment: Payment, settings: Settings
) -> ReceiptDocument:
    refunds = (await payments_repo.refunds_of(session, [payment.id])).get(payment.id, [])
    return ReceiptDocument(
        number=receipt.number,
        issued_at=receipt.issued_at,
        merchant_name=settings.merchant_name,
        merchant_address=settings.merchant_address,
        customer_email=payment.receipt_email,
        description=payment.description,
        amount=receipt.amount,
        currency=receipt.currency,
        card_brand=payment.card_brand,
        card_last4=payment.card_last4,
        refunds=tuple(
            RefundLine(amount=r.amount, created_at=r.created_at, status=r.status)
            for r in sorted(refunds, key=lambda r: (r.created_at, r.id))
            if r.status in SHOWN_REFUNDS
        ),
    )


def receipt_view(receipt: Receipt) -> dict[str, Any]:
    """The Receipt object of API.md."""
    return {
        "id": receipt.id,
        "number": receipt.number,
        "payment_id": receipt.payment_id,
        "amount": receipt.amount,
        "currency": receipt.currency,
        "issued_at": _time(receipt.issued_at),
        "pdf_url": f"/api/payments/{receipt.payment_id}/receipt.pdf",
        "emailed_at": _time(receipt.emailed_at) if receipt.emailed_at else None,
    }


async def _visible(
    session: AsyncSession, *, user: User, payment_id: str
) -> tuple[Payment, Receipt]:
    payment = await payments_repo.get(session, payment_id)
    # Another user's payment is answered exactly like one that does not exist.
    if payment is None or (payment.user_id != user.id and not user.is_operator):
        raise PaymentNotFound()
    receipt = await receipts_repo.of_payment(session, payment_id)
    if receipt is None:
        raise ReceiptNotReady()
    return payment, receipt


async def get_receipt(*, db: Database, user: User, payment_id: str) -> dict[str, Any]:
    async with db.read() as session:
        _, receipt = await _visible(session, user=user, payment_id=payment_id)
    return receipt_view(receipt)


async def get_document(
    *, db: Database, user: User, payment_id: str, settings: Settings
) -> ReceiptDocument:
    """What the receipt says now: rendered on each request, so later refunds appear."""
    async with db.read() as session:
        payment, receipt = await _visible(session, user=user, payment_id=payment_id)
        return await document(session, receipt=receipt, payment=payment, settings=settings)


async def request_email(
    *,
    db: Database,
    limiter: RateLimiter,
    limit: str,
    user: User,
    actor: Actor,
    payment_id: str,
    to: str | None = None,
) -> dict[str, Any]:
    """Queue another sending of the receipt (its own job), rate limited per payment; `to`, an
    operator's choice of another address than the payment's."""
    if to is not None and not user.is_operator:
        raise Forbidden("Only an operator may send a receipt to another address.")
    async with db.read() as session:
        _, receipt = await _visible(session, user=user, payment_id=payment_id)
    await limiter.check(limit, "receipt_email", payment_id)
    resend = secrets.token_hex(8)
    async with db.transaction() as session:
        await enqueue(
            session,
            kind=EMAIL,
            payload={"receipt_id": receipt.id, "resend": resend, **({"to": to} if to else {})},
            unique_key=f"receipt-email:{receipt.id}:{resend}",
        )
        audit.record(
            session,
            actor=actor,
            action="receipt.email_requested",
            payment_id=payment_id,
            details={"receipt_id": receipt.id, **({"to": to} if to else {})},
        )
    return receipt_view(receipt)


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
