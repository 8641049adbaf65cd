"""Reading payments: one payment, and the keyset-paginated history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azora_payments.auth import User
from azora_payments.db.repositories import audit as audit_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.session import Database
from azora_payments.domain.views import payment_view
from azora_payments.errors import PaymentNotFound
from azora_payments.pagination import decode_cursor, encode_cursor


@dataclass(frozen=True, slots=True)
class Page:
    data: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None


async def get_payment(*, db: Database, user: User, payment_id: str) -> dict[str, Any]:
    async with db.read() as session:
        payment = await payments_repo.get(session, payment_id)
        # Another user's payment is answered exactly like one that does not exist.
        if payment is None or (payment.user_id != user.id and not user.is_operator):
            raise PaymentNotFound()
        refunds = await payments_repo.refunds_of(session, [payment.id])
        receipts = await payments_repo.receipts_of(session, [payment.id])
        records = (
            (await audit_repo.for_payments(session, [payment.id]))[payment.id]
            if user.is_operator
            else None
        )
    return payment_view(
        payment,
        refunds=refunds.get(payment.id, []),
        receipt=receipts.get(payment.id),
        audit_records=records,
        operator=user.is_operator,
    )


async def history(
    *, db: Database, user: User, where: payments_repo.HistoryFilter, limit: int, cursor: str | None
) -> Page:
    after = decode_cursor(cursor, str) if cursor else None
    async with db.read() as session:
        rows = await payments_repo.page(session, where=where, limit=limit + 1, after=after)
        page = list(rows[:limit])
        ids = [p.id for p in page]
        refunds = await payments_repo.refunds_of(session, ids)
        receipts = await payments_repo.receipts_of(session, ids)
        records = await audit_repo.for_payments(session, ids) if user.is_operator else {}
    has_more = len(rows) > limit
    return Page(
        data=[
            payment_view(
                p,
                refunds=refunds.get(p.id, []),
                receipt=receipts.get(p.id),
                operator=user.is_operator,
                audit_records=records.get(p.id),
            )
            for p in page
        ],
        has_more=has_more,
        next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if has_more else None,
    )
