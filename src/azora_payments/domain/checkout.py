"""Checkout sessions: the amount comes from the product's server, the card from its customer.

The product's backend creates a session (idempotent: one order, one session); the customer pays
it through the checkout page, whose only credential is the session id. Each attempt to pay is an
ordinary payment made by `payment_flow.process` for the session's customer, under an idempotency
key scoped to the session and numbered by how many attempts have failed so far:

    attempt:0 ─► declined (final) ─► attempt:1 ─► succeeded ─► session complete

Every request while an attempt is under way (a double click, a reload, a second tab, a retry
after a 503) uses that attempt's key, so it waits for, replays or resumes that attempt and never
starts a second charge; only once an attempt has failed for good does the next key exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from azora_payments.auth import User
from azora_payments.config import Settings
from azora_payments.db.models import CheckoutSession, Payment, PaymentMethod
from azora_payments.db.repositories import checkout as checkout_repo
from azora_payments.db.repositories import idempotency as keys_repo
from azora_payments.db.repositories import methods as methods_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, receipts
from azora_payments.domain.checkout_state import CheckoutStatus, accepts_new_attempts
from azora_payments.domain.declines import DeclineLimits
from azora_payments.domain.flow_outcomes import Answer, SessionCreated, UnderWay
from azora_payments.domain.idempotency import IdempotencyKeys, Stored, render, request_fingerprint
from azora_payments.domain.payment_flow import PaymentRequest, process
from azora_payments.domain.payments import UNSETTLED
from azora_payments.domain.statuses import PaymentStatus
from azora_payments.domain.views import payment_view
from azora_payments.errors import (
    CheckoutSessionComplete,
    CheckoutSessionExpired,
    CheckoutSessionNotFound,
    ReceiptNotReady,
)
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.ids import new_secret_id

FAILED = (PaymentStatus.FAILED, PaymentStatus.CANCELED)
# The id is the customer's only credential on the checkout page: 160 random bits.
ID_RANDOM_BITS = 160


def new_session_id() -> str:
    return new_secret_id("cs", random_bits=ID_RANDOM_BITS)


@dataclass(frozen=True, slots=True)
class Customer:
    sub: str
    email: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class SessionRequest:
    customer: Customer
    amount: int
    currency: str
    description: str | None
    metadata: dict[str, str]
    return_url: str
    expires_in_minutes: int


def session_view(checkout: CheckoutSession) -> dict[str, Any]:
    """The Checkout Session object, as the product's backend sees it."""
    return {
        "id": checkout.id,
        "object": "checkout_session",
        "url": f"/checkout/{checkout.id}",
        "status": checkout.status,
        "customer": {
            "sub": checkout.customer_id,
            "email": checkout.customer_email,
            "name": checkout.customer_name,
        },
        "amount": checkout.amount,
        "currency": checkout.currency,
        "description": checkout.description,
        "metadata": dict(checkout.metadata_ or {}),
        "return_url": checkout.return_url,
        "expires_at": _time(checkout.expires_at),
        "payment_id": checkout.payment_id,
        "created_at": _time(checkout.created_at),
        "completed_at": _time(checkout.completed_at) if checkout.completed_at else None,
    }


def customer_of(checkout: CheckoutSession) -> User:
    """The user the session's payments are made for: the customer the backend named."""
    return User(id=checkout.customer_id, email=checkout.customer_email, name=checkout.customer_name)


async def create(
    *,
    keys: IdempotencyKeys,
    caller: User,
    actor: audit.Actor,
    request: SessionRequest,
    key: str,
    path: str,
    fingerprint: str,
) -> Answer:
    """Create the session under the backend's `Idempotency-Key` (made for the request `path`
    names): the same order's retry gets the same session back."""
    begun = await keys.begin(
        user_id=caller.id, key=key, method="POST", path=path, fingerprint=fingerprint
    )
    if isinstance(begun, Stored):
        return Answer(begun)
    held = begun
    async with keys.working(held):
        now = utcnow()
        checkout = CheckoutSession(
            id=new_session_id(),
            status=CheckoutStatus.OPEN,
            customer_id=request.customer.sub,
            customer_email=request.customer.email,
            customer_name=request.customer.name,
            amount=request.amount,
            currency=request.currency,
            description=request.description,
            metadata_=request.metadata,
            return_url=request.return_url,
            expires_at=now + timedelta(minutes=request.expires_in_minutes),
            created_by=caller.id,
            created_at=now,
            updated_at=now,
        )
        created = SessionCreated(session_view(checkout))
        async with keys.phase(held) as phase:
            checkout_repo.add(phase.session, checkout)
            audit.record(
                phase.session,
                actor=actor,
                action="checkout_session.created",
                details={
                    "checkout_session_id": checkout.id,
                    "amount": checkout.amount,
                    "currency": checkout.currency,
                    "customer": checkout.customer_id,
                },
            )
            stored = await phase.finish(created)
    await keys.remember(user_id=caller.id, key=key, fingerprint=fingerprint, answer=stored)
    return Answer(stored, created)


async def get_for_backend(*, db: Database, caller: User, checkout_id: str) -> dict[str, Any]:
    """A service sees the sessions it created; an operator sees every session."""
    async with db.read() as session:
        checkout = await checkout_repo.get(session, checkout_id)
    if checkout is None or (not caller.is_operator and checkout.created_by != caller.id):
        raise CheckoutSessionNotFound()
    return session_view(checkout)


async def load(*, db: Database, checkout_id: str) -> tuple[CheckoutSession, Sequence[Payment]]:
    """The session and its attempts, oldest first; an unknown id is not found."""
    async with db.read() as session:
        checkout = await checkout_repo.get(session, checkout_id)
        if checkout is None:
            raise CheckoutSessionNotFound()
        attempts = await checkout_repo.attempts(session, checkout_id)
    return checkout, attempts


async def pay(
    *,
    keys: IdempotencyKeys,
    stripe: StripeGateway,
    origin: audit.Actor,
    checkout_id: str,
    payment_method_id: str,
    save_payment_method: bool,
    limits: DeclineLimits,
    client_ip: str | None,
    path: str,
) -> Answer:
    """Pay the session with the customer's card: the current attempt, never a second charge.
    `origin` is the request (its id and address); the actor is the session's customer. Declines
    count against the customer, the card and `client_ip` as for any payment. `path` names the
    pay request of this session, which every attempt's key was made for."""
    checkout, attempts = await load(db=keys.db, checkout_id=checkout_id)
    customer = customer_of(checkout)
    actor = audit.Actor(customer.id, request_id=origin.request_id, client_ip=origin.client_ip)
    paid = next((p for p in attempts if p.status == PaymentStatus.SUCCEEDED), None)
    if checkout.status == CheckoutStatus.COMPLETE or paid is not None:
        raise CheckoutSessionComplete(payment_id=checkout.payment_id or (paid.id if paid else None))
    under_way = next((p for p in attempts if p.status in UNSETTLED), None)
    if under_way is None and not accepts_new_attempts(checkout, now=utcnow()):
        raise CheckoutSessionExpired()
    attempt = sum(1 for p in attempts if p.status in FAILED)
    scope, key = f"checkout:{checkout.id}", f"attempt:{attempt}"
    if under_way is not None:
        async with keys.db.read() as session:
            row = await keys_repo.get(session, user_id=scope, key=key)
        if row is None or row.payment_id != under_way.id:
            # The attempt's key is gone (kept for IDEMPOTENCY_KEY_TTL_HOURS) while its payment
            # is still unsettled: answer with it as it is; webhooks or reconciliation settle it.
            as_it_is = UnderWay(payment_view(under_way))
            return Answer(render(as_it_is), as_it_is)
    request = PaymentRequest(
        amount=checkout.amount,
        currency=checkout.currency,
        payment_method_id=payment_method_id,
        description=checkout.description,
        metadata=dict(checkout.metadata_ or {}),
        save_payment_method=save_payment_method,
        receipt_email=None,
        checkout_session_id=checkout.id,
    )
    # The fingerprint is the attempt, not the card: whatever a second tab sends while an
    # attempt is under way joins that attempt instead of being refused or charged apart.
    return await process(
        keys=keys,
        stripe=stripe,
        user=customer,
        actor=actor,
        request=request,
        key=key,
        fingerprint=request_fingerprint("POST", path, {"attempt": attempt}),
        limits=limits,
        client_ip=client_ip,
        scope=scope,
        path=path,
    )


@dataclass(frozen=True, slots=True)
class PageState:
    """What the checkout page shows: the session, its latest attempt, the receipt once paid."""

    checkout: CheckoutSession
    latest: Payment | None
    receipt_ready: bool

    @property
    def status(self) -> str:
        return str(self.checkout.status)

    def view(self) -> dict[str, Any]:
        latest = self.latest
        payment: dict[str, Any] | None = None
        if latest is not None:
            view = payment_view(latest)
            payment = {
                k: view[k] for k in ("id", "status", "payment_method", "failure", "client_secret")
            }
        return {
            "id": self.checkout.id,
            "status": self.status,
            "amount": self.checkout.amount,
            "currency": self.checkout.currency,
            "description": self.checkout.description,
            "expires_at": _time(self.checkout.expires_at),
            "return_url": self.checkout.return_url,
            "payment": payment,
            "receipt_url": f"/checkout/{self.checkout.id}/receipt.pdf"
            if self.receipt_ready
            else None,
        }


async def page_state(*, db: Database, checkout_id: str) -> PageState:
    async with db.read() as session:
        checkout = await checkout_repo.get(session, checkout_id)
        if checkout is None:
            raise CheckoutSessionNotFound()
        attempts = await checkout_repo.attempts(session, checkout_id)
        paid = next((p for p in attempts if p.status == PaymentStatus.SUCCEEDED), None)
        latest = paid or (attempts[-1] if attempts else None)
        receipt = await receipts_repo.of_payment(session, paid.id) if paid else None
    return PageState(checkout=checkout, latest=latest, receipt_ready=receipt is not None)


async def saved_methods(*, db: Database, checkout_id: str) -> Sequence[PaymentMethod]:
    """The session's customer's saved cards, and nobody else's."""
    async with db.read() as session:
        checkout = await checkout_repo.get(session, checkout_id)
        if checkout is None:
            raise CheckoutSessionNotFound()
        return await methods_repo.list_for_user(session, checkout.customer_id)


async def receipt_pdf(
    *, db: Database, storage: receipts.Storage | None, checkout_id: str, settings: Settings
) -> receipts.StoredPdf:
    """The stored receipt of the payment that paid the session (its latest version)."""
    async with db.read() as session:
        checkout = await checkout_repo.get(session, checkout_id)
        if checkout is None:
            raise CheckoutSessionNotFound()
        payment = (
            await payments_repo.get(session, checkout.payment_id) if checkout.payment_id else None
        )
        receipt = await receipts_repo.of_payment(session, payment.id) if payment else None
    if payment is None or receipt is None:
        raise ReceiptNotReady()
    return await receipts.current_pdf(
        db=db, storage=storage, settings=settings, receipt_id=receipt.id, reason="requested"
    )


def _time(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))
