"""Receipts: issued once per succeeded payment with a number sequential per year, e-mailed from
the durable queue, and kept as versioned PDFs: one when issued and another whenever what the
receipt shows changes (a refund). Every reader (the API, the e-mails) gets the latest stored
version, so the customer and the API see one truth; earlier versions stay stored."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from limits import parse as parse_limit
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.auth import User
from azora_payments.config import Settings
from azora_payments.db.models import Payment, Receipt, ReceiptVersion
from azora_payments.db.repositories import audit as audit_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import audit
from azora_payments.domain.audit import Actor
from azora_payments.domain.receipt_content import SHOWN_REFUNDS, ReceiptDocument, RefundLine
from azora_payments.domain.statuses import PaymentStatus
from azora_payments.errors import Forbidden, PaymentNotFound, RateLimited, ReceiptNotReady
from azora_payments.ids import new_id
from azora_payments.jobs.queue import enqueue
from azora_payments.logs import log_fields
from azora_payments.pdf import render_receipt
from azora_payments.storage import FolderStorage, S3Storage, version_key

logger = logging.getLogger(__name__)

ISSUE = "receipt.issue"
EMAIL = "receipt.email"
EMAIL_REQUESTED = "receipt.email_requested"
RENDER = "receipt.render"

Storage = FolderStorage | S3Storage


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
    if payment is None or payment.status != PaymentStatus.SUCCEEDED:
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


async def enqueue_render(session: AsyncSession, *, payment_id: str, cause: str) -> None:
    """Queue a new rendering of the payment's receipt (a refund appeared or moved)."""
    await enqueue(
        session,
        kind=RENDER,
        payload={"payment_id": payment_id, "cause": cause},
        unique_key=f"receipt-render:{payment_id}:{cause}",
    )


async def document(
    session: AsyncSession, *, receipt: Receipt, payment: Payment, settings: Settings
) -> ReceiptDocument:
    refunds = (await payments_repo.refunds_of(session, [payment.id])).get(payment.id, [])
    return ReceiptDocument(
        receipt_id=receipt.id,
        number=receipt.number,
        issued_at=receipt.issued_at,
        merchant_name=settings.merchant_name,
        merchant_address=settings.merchant_address,
        merchant_contact=settings.merchant_contact or settings.receipt_from_email,
        locale=settings.receipt_locale,
        timezone=settings.receipt_timezone,
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


@dataclass(frozen=True, slots=True)
class StoredPdf:
    number: str
    version: int | None  # None: no RECEIPT_STORAGE, drawn for this reader only
    data: bytes
    document: ReceiptDocument  # what `data` shows


async def current_pdf(
    *, db: Database, storage: Storage | None, settings: Settings, receipt_id: str, reason: str
) -> StoredPdf:
    """The latest stored version of the receipt, after storing a new one if what the receipt
    shows changed since (or none is stored yet).

    The common case only reads: the stored version's content hash equals what the page would
    show now. Otherwise the page is rendered (outside any transaction: rendering is pure), then
    the receipt row is locked, the check repeated, and the version stored and recorded in that
    transaction, so two renderers never race: the second finds the first's version current.
    """
    async with db.read() as session:
        receipt, doc = await _load(session, receipt_id=receipt_id, settings=settings)
        latest = await receipts_repo.latest_version(session, receipt_id)
    if storage is None:
        return StoredPdf(receipt.number, None, await asyncio.to_thread(render_receipt, doc), doc)
    found = await _stored(storage, latest, receipt, doc)
    if found is not None:
        return found
    pdf = await asyncio.to_thread(render_receipt, doc)
    async with db.transaction() as session:
        locked = await receipts_repo.get(session, receipt_id, for_update=True)
        assert locked is not None
        receipt, now = await _load(session, receipt_id=receipt_id, settings=settings)
        if now != doc:  # a refund moved while we drew: draw what is true now
            doc, pdf = now, await asyncio.to_thread(render_receipt, now)
        latest = await receipts_repo.latest_version(session, receipt_id)
        found = await _stored(storage, latest, receipt, doc)
        if found is not None:
            return found
        digest = hashlib.sha256(pdf).hexdigest()
        if latest is not None and latest.sha256 == digest:
            # The stored object went missing: the same page renders to the same bytes, so it
            # is put back under its own key rather than counted as a new version.
            await storage.put(latest.storage_key, pdf)
            return StoredPdf(receipt.number, latest.version, pdf, doc)
        version = 1 if latest is None else latest.version + 1
        key = version_key(receipt.year, receipt.number, version)
        # Written before the row that names it commits: a crash leaves at most an object no
        # row points to, which the next try overwrites under the same key.
        await storage.put(key, pdf)
        receipts_repo.add(
            session,
            ReceiptVersion(
                receipt_id=receipt.id,
                version=version,
                storage_key=key,
                content_hash=doc.fingerprint(),
                sha256=digest,
                size=len(pdf),
                reason=reason[:64],
            ),
        )
        locked.pdf_key = key
        audit.record(
            session,
            actor=audit.SYSTEM,
            action="receipt.rendered",
            payment_id=receipt.payment_id,
            details={"receipt_id": receipt.id, "version": version, "reason": reason[:64]},
        )
    logger.info(
        "receipt rendered",
        extra=log_fields(receipt_id=receipt.id, version=version, reason=reason[:64]),
    )
    return StoredPdf(receipt.number, version, pdf, doc)


async def _stored(
    storage: Storage, latest: ReceiptVersion | None, receipt: Receipt, doc: ReceiptDocument
) -> StoredPdf | None:
    """The latest version when it shows `doc` and its object is there."""
    if latest is None or latest.content_hash != doc.fingerprint():
        return None
    data = await storage.get(latest.storage_key)
    return None if data is None else StoredPdf(receipt.number, latest.version, data, doc)


async def _load(
    session: AsyncSession, *, receipt_id: str, settings: Settings
) -> tuple[Receipt, ReceiptDocument]:
    receipt = await receipts_repo.get(session, receipt_id)
    assert receipt is not None
    payment = await payments_repo.get(session, receipt.payment_id)
    assert payment is not None
    return receipt, await document(session, receipt=receipt, payment=payment, settings=settings)


async def get_pdf(
    *, db: Database, storage: Storage | None, user: User, payment_id: str, settings: Settings
) -> StoredPdf:
    """The receipt's latest stored version, for a reader who may see the payment."""
    async with db.read() as session:
        _, receipt = await _visible(session, user=user, payment_id=payment_id)
    return await current_pdf(
        db=db, storage=storage, settings=settings, receipt_id=receipt.id, reason="requested"
    )


@dataclass(frozen=True, slots=True)
class ResendLimits:
    """Re-sends allowed per payment and per caller (`limits` notation: `3/hour`)."""

    per_payment: str
    per_user: str


async def request_email(
    *,
    db: Database,
    limits: ResendLimits,
    user: User,
    actor: Actor,
    payment_id: str,
    email: str | None = None,
) -> dict[str, Any]:
    """Queue another sending of the receipt (its own job), to the payment's address or, for an
    operator, to `email`; limited per payment and per caller.

    The limits are counted in the database, from the audit records of earlier requests, in the
    transaction that adds this one: exact across servers, and never let through because a cache
    is down."""
    if email is not None and not user.is_operator:
        raise Forbidden("Only operators may send a receipt to another address.")
    async with db.read() as session:
        _, receipt = await _visible(session, user=user, payment_id=payment_id)
    resend = secrets.token_hex(8)
    async with db.transaction() as session:
        # Requests for one payment queue on its row, and one caller's on a lock of its own.
        await payments_repo.get(session, payment_id, for_update=True)
        await audit_repo.lock_actor(session, actor.id, EMAIL_REQUESTED)
        await _within_limit(session, limits.per_payment, payment_id=payment_id)
        await _within_limit(session, limits.per_user, actor=actor.id)
        payload: dict[str, Any] = {"receipt_id": receipt.id, "resend": resend}
        details: dict[str, Any] = {"receipt_id": receipt.id}
        if email is not None:
            payload["email"] = details["email"] = email
        await enqueue(
            session,
            kind=EMAIL,
            payload=payload,
            unique_key=f"receipt-email:{receipt.id}:{resend}",
        )
        audit.record(
            session, actor=actor, action=EMAIL_REQUESTED, payment_id=payment_id, details=details
        )
    return receipt_view(receipt)


async def _within_limit(
    session: AsyncSession, limit: str, *, payment_id: str | None = None, actor: str | None = None
) -> None:
    item = parse_limit(limit)
    window = timedelta(seconds=item.get_expiry())
    now = utcnow()
    count, oldest = await audit_repo.count_since(
        session, action=EMAIL_REQUESTED, since=now - window, payment_id=payment_id, actor=actor
    )
    if count >= item.amount:
        # Free again when the oldest request in the window leaves it.
        retry_after = (oldest or now) + window - now
        raise RateLimited(math.ceil(retry_after.total_seconds()))


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
