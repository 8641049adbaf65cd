"""What a batch of webhook events, applied in one transaction by the worker, reads once for all
of its events instead of once per event: the payments their objects name, locked, and the
refunds and receipts of those payments, which the notifications of their changes carry.

Only a hit is trusted, and only while it is what the query would answer: a payment found here
was locked by this transaction, so nothing else changed it, and the session's identity map would
hand back this same object from a query anyway. Refunds are written while applying (refund
events), so `refunds_changed` drops them for the rest of the batch; receipts are only written by
the receipt job, which locks the payment first. A miss runs the usual query. The API's own
outcome of a charge (`payment_flow`) holds the same reads for its one locked payment, so that
its notification and its answer share them (`prefetch_locked`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Payment, Receipt, Refund
from azora_payments.db.repositories import payments as payments_repo

# `session.info` key of the batch's `Prefetched`, set only while the batch is applied.
_KEY = "azora.events.prefetched"


@dataclass(slots=True)
class Prefetched:
    by_intent: dict[str, Payment]
    refunds: dict[str, list[Refund]]
    receipts: dict[str, Receipt]
    # Payments whose refunds (and receipts) were read and are still what a query would answer.
    refunds_known: set[str]
    receipts_known: frozenset[str]


async def prefetch(session: AsyncSession, intent_ids: Sequence[str]) -> Prefetched:
    """Lock the payments of `intent_ids` and read their refunds and receipts: three
    statements for the whole batch."""
    payments = await payments_repo.lock_by_intents(session, intent_ids)
    ids = [p.id for p in payments]
    refunds = await payments_repo.refunds_of(session, ids)
    receipts = await payments_repo.receipts_of(session, ids)
    return Prefetched(
        by_intent={p.stripe_payment_intent_id: p for p in payments if p.stripe_payment_intent_id},
        refunds=dict(refunds),
        receipts=receipts,
        refunds_known=set(ids),
        receipts_known=frozenset(ids),
    )


async def prefetch_locked(session: AsyncSession, payment: Payment) -> Prefetched:
    """The refunds and receipt of one payment this transaction locked, read once for what its
    change tells and answers (the API's own outcome of a charge): one statement."""
    refunds, receipt = await payments_repo.refunds_and_receipt_of(session, payment.id)
    return Prefetched(
        by_intent={},
        refunds={payment.id: refunds},
        receipts={payment.id: receipt} if receipt is not None else {},
        refunds_known={payment.id},
        receipts_known=frozenset({payment.id}),
    )


@contextmanager
def held(session: AsyncSession, prefetched: Prefetched) -> Iterator[None]:
    session.info[_KEY] = prefetched
    try:
        yield
    finally:
        del session.info[_KEY]


def _current(session: AsyncSession) -> Prefetched | None:
    found: Prefetched | None = session.info.get(_KEY)
    return found


def locked_by_intent(session: AsyncSession, intent_id: str) -> Payment | None:
    """The payment of `intent_id` if this batch locked it; None means "ask the database"."""
    prefetched = _current(session)
    return prefetched.by_intent.get(intent_id) if prefetched is not None else None


def notification_reads(
    session: AsyncSession, payment_id: str
) -> tuple[list[Refund], Receipt | None] | None:
    """The payment's refunds and receipt as a query would answer now, or None when not known."""
    prefetched = _current(session)
    if prefetched is None or payment_id not in prefetched.refunds_known:
        return None
    if payment_id not in prefetched.receipts_known:
        return None
    return prefetched.refunds.get(payment_id, []), prefetched.receipts.get(payment_id)


def refunds_changed(session: AsyncSession) -> None:
    """Refunds are being written: from now on, this batch reads them from the database."""
    prefetched = _current(session)
    if prefetched is not None:
        prefetched.refunds_known.clear()
