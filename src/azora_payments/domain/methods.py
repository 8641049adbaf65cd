"""Saved payment methods, and the one Stripe customer per user they hang on.

Stripe calls happen between our short transactions, never inside one. Every step is safe to
repeat: the customer is created under an idempotency key derived from the user id, an attach
under one derived from the method and customer, and rows are inserted "if absent", so two first
requests that race end with one customer and one row. Stripe's `payment_method.*` events keep
the saved rows in line (`settle_payment_method`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.auth import User
from azora_payments.db.models import PaymentMethod
from azora_payments.db.repositories import customers as customers_repo
from azora_payments.db.repositories import methods as methods_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import audit
from azora_payments.errors import PaymentMethodNotFound
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.stripe_gateway import StripePaymentMethod, StripeRejected


@dataclass(frozen=True, slots=True)
class SaveResult:
    method: PaymentMethod
    created: bool


async def ensure_customer(*, db: Database, stripe: StripeGateway, user: User) -> str:
    """The user's Stripe customer id, created on first need, exactly once per user."""
    async with db.read() as session:
        existing = await customers_repo.get_stripe_id(session, user.id)
    if existing:
        return existing
    created = await stripe.create_customer(user_id=user.id, email=user.email, name=user.name)
    async with db.transaction() as session:
        await customers_repo.insert_if_absent(session, user_id=user.id, stripe_customer_id=created)
        winner = await customers_repo.get_stripe_id(session, user.id)
    assert winner is not None
    return winner


async def retrieve_owned(
    *, stripe: StripeGateway, payment_method_id: str, customer_id: str | None
) -> StripePaymentMethod:
    """The method from Stripe if it is free or already the customer's; else not found, so that
    another customer's method cannot be told apart from one that does not exist."""
    try:
        method = await stripe.retrieve_payment_method(payment_method_id)
    except StripeRejected as exc:
        if exc.stripe_code == "resource_missing" or exc.http_status == 404:
            raise PaymentMethodNotFound() from None
        raise
    if method.customer is not None and method.customer != customer_id:
        raise PaymentMethodNotFound()
    return method


async def save(
    *,
    db: Database,
    stripe: StripeGateway,
    user: User,
    actor: audit.Actor,
    payment_method_id: str,
    set_default: bool,
) -> SaveResult:
    async with db.read() as session:
        saved = await methods_repo.get(session, payment_method_id)
    if saved is not None and saved.user_id != user.id:
        raise PaymentMethodNotFound()
    customer_id = await ensure_customer(db=db, stripe=stripe, user=user)
    method = await retrieve_owned(
        stripe=stripe, payment_method_id=payment_method_id, customer_id=customer_id
    )
    if method.customer is None:
        # Stripe may answer with another id (test ids such as pm_card_visa make a new method).
        method = await stripe.attach_payment_method(
            payment_method_id=payment_method_id, customer_id=customer_id
        )
    if set_default:
        # Each change of default has its own number (the gateway's key includes it); the SDK's
        # retries of one change share it.
        async with db.transaction() as session:
            version = await customers_repo.next_default_method_version(session, user.id)
        await stripe.set_default_payment_method(
            customer_id=customer_id, payment_method_id=method.id, version=version
        )
    async with db.transaction() as session:
        created = await methods_repo.insert_if_absent(
            session, saved_row(method, user_id=user.id, customer_id=customer_id)
        )
        if created:
            audit.record(
                session,
                actor=actor,
                action="payment_method.saved",
                details={"payment_method_id": method.id, "brand": _brand(method)},
            )
        if set_default:
            await methods_repo.set_default(session, user_id=user.id, payment_method_id=method.id)
            audit.record(
                session,
                actor=actor,
                action="payment_method.default_set",
                details={"payment_method_id": method.id},
            )
        row = await methods_repo.get(session, method.id)
        assert row is not None
    return SaveResult(method=row, created=created)


async def list_methods(*, db: Database, user: User) -> Sequence[PaymentMethod]:
    async with db.read() as session:
        return await methods_repo.list_for_user(session, user.id)


async def delete(
    *, db: Database, stripe: StripeGateway, user: User, actor: audit.Actor, payment_method_id: str
) -> None:
    async with db.read() as session:
        row = await methods_repo.get_for_user(
            session, user_id=user.id, payment_method_id=payment_method_id
        )
    if row is None:
        raise PaymentMethodNotFound()
    try:
        await stripe.detach_payment_method(
            payment_method_id=payment_method_id, customer_id=row.stripe_customer_id
        )
    except StripeRejected as exc:
        # Already detached (in Stripe's dashboard, or by an earlier attempt of this delete).
        if exc.stripe_code not in ("resource_missing", "payment_method_unexpected_state"):
            raise
    async with db.transaction() as session:
        await methods_repo.remove(session, payment_method_id)
        audit.record(
            session,
            actor=actor,
            action="payment_method.deleted",
            details={"payment_method_id": payment_method_id},
        )


async def settle_payment_method(
    session: AsyncSession, event_type: str, obj: dict[str, Any], *, created: datetime
) -> list[str] | None:
    """Keep saved cards in line with Stripe's `payment_method.*` events; what changed, or None
    when the method is not saved here. Attaching needs nothing: a card is saved only when its
    owner asks (`/methods/save` or `save_payment_method`), not whenever Stripe attaches it."""
    pm_id = str(obj.get("id"))
    row = await methods_repo.get(session, pm_id)
    if row is None:
        return None
    if event_type == "payment_method.detached":
        # A detach older than the row is from before the card was saved again: keep it. Events
        # carry whole seconds, so a detach in the saving second still removes the row.
        if row.created_at >= created + timedelta(seconds=1):
            return []
        await methods_repo.remove(session, pm_id)
        audit.record(
            session,
            actor=audit.STRIPE,
            action="payment_method.detached",
            details={"payment_method_id": pm_id, "user_id": row.user_id},
        )
        return [f"{pm_id}: removed (detached in Stripe)"]
    if event_type == "payment_method.updated":
        card = obj.get("card") or {}
        fresh = {
            "brand": card.get("brand", row.brand),
            "last4": card.get("last4", row.last4),
            "exp_month": card.get("exp_month", row.exp_month),
            "exp_year": card.get("exp_year", row.exp_year),
        }
        if all(getattr(row, k) == v for k, v in fresh.items()):
            return []
        for key, value in fresh.items():
            setattr(row, key, value)
        audit.record(
            session,
            actor=audit.STRIPE,
            action="payment_method.updated",
            details={"payment_method_id": pm_id, "user_id": row.user_id},
        )
        return [f"{pm_id}: card details refreshed"]
    return []


def _brand(method: StripePaymentMethod) -> str | None:
    return method.card.brand if method.card else None


def saved_row(method: StripePaymentMethod, *, user_id: str, customer_id: str) -> PaymentMethod:
    """Our row for a method saved on the user's customer (not the default until asked)."""
    card = method.card
    now = utcnow()
    return PaymentMethod(
        id=method.id,
        user_id=user_id,
        stripe_customer_id=customer_id,
        type=method.type,
        brand=card.brand if card else None,
        last4=card.last4 if card else None,
        exp_month=card.exp_month if card else None,
        exp_year=card.exp_year if card else None,
        card_fingerprint=card.fingerprint if card else None,
        is_default=False,
        created_at=now,
        updated_at=now,
    )
