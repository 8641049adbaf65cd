"""The schema: one class per table. Money is an integer in minor units beside its currency."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from azora_payments.db.types import BigIntPK, JSONType, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, nullable=False)


def _updated() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)


class Customer(Base):
    """The one Stripe customer of a user (a JWT `sub`)."""

    __tablename__ = "customers"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    # Counts the changes of the default card: each change's Stripe idempotency key carries its
    # number, so switching back to an earlier card can never replay that earlier answer.
    default_method_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = _created()


class PaymentMethod(Base):
    """A card saved for a user; identified by Stripe's `pm_…` id, the only Stripe id we expose."""

    __tablename__ = "payment_methods"
    __table_args__ = (Index(None, "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    stripe_customer_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32), default="card")
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None] = mapped_column(Integer)
    exp_year: Mapped[int | None] = mapped_column(Integer)
    # Stripe's fingerprint of the card number: the decline limit per card counts by it.
    card_fingerprint: Mapped[str | None] = mapped_column(String(64))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        # Keyset pagination: newest first, ties broken by id, per user and across users.
        Index(None, "user_id", "created_at", "id"),
        Index(None, "created_at", "id"),
        # The same with a status filter, so a rare status is not found by scanning past the rest.
        Index(None, "user_id", "status", "created_at", "id"),
        Index(None, "status", "created_at", "id"),
        Index(None, "status", "updated_at"),
        # The console's disputes list, newest change first.
        Index(None, "disputed", "updated_at", "id"),
        # The console's overview: a window's counts and sums by currency and status, read from
        # the index alone (index-only scan), not from a heap fetch per payment.
        Index(None, "created_at", "status", "currency", "amount"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    description: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, default=dict)
    receipt_email: Mapped[str | None] = mapped_column(String(320))
    save_payment_method: Mapped[bool] = mapped_column(Boolean, default=False)
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    card_brand: Mapped[str | None] = mapped_column(String(32))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    card_exp_month: Mapped[int | None] = mapped_column(Integer)
    card_exp_year: Mapped[int | None] = mapped_column(Integer)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    client_secret: Mapped[str | None] = mapped_column(String(255))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_decline_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    # Stripe's real decline reason, for operators only: `failure_decline_code` is what the
    # customer was told (`generic_decline` for the reasons that would help a card tester).
    stripe_decline_code: Mapped[str | None] = mapped_column(String(64))
    # The card charged and the client address that asked (when countable): what a decline of
    # this payment counts against, also when Stripe reports it later by webhook.
    card_fingerprint: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    disputed: Mapped[bool] = mapped_column(Boolean, default=False)
    dispute_status: Mapped[str | None] = mapped_column(String(32))
    # When reconciliation last re-read it from Stripe: a payment that stays unsettled (a 3-D
    # Secure never completed) is re-read once per threshold, not on every pass.
    reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The checkout session this payment is an attempt of (None for `POST /api/payments/process`).
    checkout_session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class CheckoutSession(Base):
    """What the product's backend asked its customer to pay; paid at most once, by one of the
    payments whose `checkout_session_id` it is (`payment_id` once one succeeded)."""

    __tablename__ = "checkout_sessions"
    __table_args__ = (Index(None, "status", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[str] = mapped_column(String(255))
    customer_email: Mapped[str | None] = mapped_column(String(320))
    customer_name: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, default=dict)
    return_url: Mapped[str] = mapped_column(String(2048))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    payment_id: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(255))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Refund(Base):
    __tablename__ = "refunds"
    # The console's overview sums the refunds of a window.
    __table_args__ = (Index(None, "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(32))
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(255))
    # When the customer was told it succeeded (an e-mail goes out once).
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Receipt(Base):
    __tablename__ = "receipts"
    __table_args__ = (UniqueConstraint("year", "sequence"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), unique=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    year: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    issued_at: Mapped[datetime] = _created()
    pdf_key: Mapped[str | None] = mapped_column(String(512))
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ReceiptVersion(Base):
    """One rendering of a receipt, as stored: the first when issued, another after each refund.
    Rows and objects are only ever added, so what a customer was sent stays provable."""

    __tablename__ = "receipt_versions"
    __table_args__ = (UniqueConstraint("receipt_id", "version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    receipt_id: Mapped[str] = mapped_column(ForeignKey("receipts.id"))
    version: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(512))
    # What the page shows (ReceiptDocument.fingerprint) and the stored bytes' digest.
    content_hash: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()


class ReceiptSequence(Base):
    """The last receipt number issued in a year: numbers are sequential and never reused."""

    __tablename__ = "receipt_sequences"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_value: Mapped[int] = mapped_column(Integer, default=0)


class IdempotencyKey(Base):
    """One client request under an `Idempotency-Key`, and how far it got (its recovery point)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "key"),
        Index(None, "created_at"),
        # Reconciliation takes the key of the payment or refund it settles.
        Index(None, "payment_id"),
        Index(None, "refund_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    request_method: Mapped[str] = mapped_column(String(8))
    request_path: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    recovery_point: Mapped[str] = mapped_column(String(32))
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    response_status: Mapped[int | None] = mapped_column(Integer)
    # The answer's exact JSON text: a replay is byte for byte the first answer.
    response_body: Mapped[str | None] = mapped_column(Text)
    payment_id: Mapped[str | None] = mapped_column(String(40))
    refund_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = _created()
    last_run_at: Mapped[datetime] = _created()


class WebhookEvent(Base):
    """A verified Stripe event, recorded before it is acknowledged; applied exactly once."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index(None, "status", "received_at"), Index(None, "stripe_created"))

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    api_version: Mapped[str | None] = mapped_column(String(32))
    stripe_created: Mapped[datetime] = mapped_column(UTCDateTime())
    object_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="received")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="webhook")
    received_at: Mapped[datetime] = _created()
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SyncCursor(Base):
    """How far a sync with Stripe is complete: every event created before `position` was seen."""

    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = _updated()


class Job(Base):
    """A durable job (the transactional outbox): written in the transaction that causes it."""

    __tablename__ = "jobs"
    __table_args__ = (Index(None, "status", "run_at"), Index(None, "kind", "status"))

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=10)
    run_at: Mapped[datetime] = _created()
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_by: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set for jobs that must exist once (scheduled jobs, one receipt per payment, …).
    unique_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditRecord(Base):
    """Append-only: who did what, when, from where."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index(None, "payment_id", "id"),
        Index(None, "actor", "id"),
        Index(None, "action", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = _created()
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(128))
    client_ip: Mapped[str | None] = mapped_column(String(64))


class CardDecline(Base):
    """One decline Stripe reported (by answer or webhook), once per failed charge: what the
    decline limits count when Redis is not there to count them."""

    __tablename__ = "card_declines"
    __table_args__ = (
        Index(None, "user_id", "at"),
        Index(None, "card_fingerprint", "at"),
        Index(None, "client_ip", "at"),
        Index(None, "at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # The failed charge (or, without one, the payment): the API's answer and the webhook that
    # report the same decline count once.
    source: Mapped[str] = mapped_column(String(255), unique=True)
    at: Mapped[datetime] = _created()
    user_id: Mapped[str] = mapped_column(String(255))
    card_fingerprint: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    stripe_decline_code: Mapped[str | None] = mapped_column(String(64))


class Notification(Base):
    """A signed notification to the product's backend, listed oldest first for catching up."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index(None, "created_at", "id"),
        # The console's undelivered list: the few rows without `delivered_at`, newest first.
        Index(None, "delivered_at", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[str | None] = mapped_column(String(40), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class ConsoleSession(Base):
    """A signed-in operator in the console: only a hash of the cookie's random id is kept, so
    the table alone cannot be used to sign in; every server and worker process shares it."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index(None, "expires_at"),)

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[str] = mapped_column(String(255))
    operator_email: Mapped[str | None] = mapped_column(String(320))
    operator_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ConsoleSignInLink(Base):
    """A one-time sign-in link (`azora-payments dev`): a nonce, kept hashed, redeemed once by
    POST within its minute."""

    __tablename__ = "console_sign_in_links"

    nonce_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[str] = mapped_column(String(255))
    operator_email: Mapped[str | None] = mapped_column(String(320))
    operator_name: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RefundApproval(Base):
    """A console refund above CONSOLE_REFUND_APPROVAL_ABOVE, waiting for a second operator."""

    __tablename__ = "refund_approvals"
    __table_args__ = (Index(None, "payment_id", "created_at"), Index(None, "status", "created_at"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    requested_by: Mapped[str] = mapped_column(String(255))
    # The request form's idempotency key (hashed with the requester): sent twice, one approval.
    request_key: Mapped[str] = mapped_column(String(64), unique=True)
    decided_by: Mapped[str | None] = mapped_column(String(255))
    refund_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = _created()
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
