"""What a payment costs the database: the statements one `POST /api/payments/process` sends,
counted on the engine, on SQLite and PostgreSQL (issue 16). The guarantees are other tests';
these keep the round trips saved really saved."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import event

from azora_payments.db.models import Receipt, Refund
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.types import utcnow
from azora_payments.services import Services
from tests.conftest import postgres_only
from tests.test_payments import PROCESS, Buyer, payment_body
from tests.webhooks.conftest import seed_payment

# A second payment with a saved card, with no Redis (the decline limits read the database):
# the key; the method and customer; the three limits; audit, payment row and the key's move;
# the payment locked, its refunds and receipt; audit, notification, payment update, the jobs;
# the key's answer. 20 before issue 16.
SAVED_CARD_STATEMENTS = 13
# The same with a card the service does not know (Stripe is asked for it): its limit is read
# once the card is known, in a statement of its own. Also 20 before.
UNKNOWN_CARD_STATEMENTS = 14


@contextmanager
def counting(services: Services) -> Iterator[list[str]]:
    """The statements the engine sends within the block. SQLite's `BEGIN`, which this
    service sends itself (asyncpg's goes unseen), is left out so both databases count alike."""
    seen: list[str] = []
    engine = services.db.engine.sync_engine

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)


async def test_a_payment_with_a_saved_card_takes_few_statements(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    assert stripe_services.settings.redis_url is None
    buyer = Buyer()
    saved = await api.post(
        "/api/payments/methods/save",
        json={"payment_method_id": "pm_card_visa"},
        headers=buyer.headers,
    )
    assert saved.status_code in (200, 201), saved.text
    method = saved.json()["id"]
    first = await api.post(
        PROCESS, json=payment_body(payment_method_id=method), headers=buyer.with_key()
    )
    assert first.status_code == 201, first.text

    with counting(stripe_services) as statements:
        paid = await api.post(
            PROCESS, json=payment_body(payment_method_id=method), headers=buyer.with_key()
        )
    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "succeeded"
    assert paid.json()["payment_method"]["last4"] == "4242"
    assert len(statements) <= SAVED_CARD_STATEMENTS, "\n".join(
        s.split("\n")[0][:100] for s in statements
    )


@postgres_only  # SQLite has no autocommit here: its single statements are transactions
async def test_a_new_key_is_taken_in_autocommit_on_postgres(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    """A new key's INSERT commits by itself: no BEGIN and COMMIT round trips around it."""
    modes: list[object] = []
    engine = stripe_services.db.engine.sync_engine

    def on_statement(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO idempotency_keys"):
            modes.append(conn.get_execution_options().get("isolation_level"))

    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        buyer = Buyer()
        paid = await api.post(PROCESS, json=payment_body(), headers=buyer.with_key())
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
    assert paid.status_code == 201, paid.text
    assert modes == ["AUTOCOMMIT"]


async def test_refunds_and_receipt_read_in_one_statement_as_in_two(
    stripe_services: Services,
) -> None:
    payment = await seed_payment(stripe_services, status="succeeded", pi_id="pi_one_read")
    bare = await seed_payment(stripe_services, status="succeeded", pi_id="pi_one_read_bare")
    now = utcnow()
    async with stripe_services.db.transaction() as session:
        for n, amount in enumerate((300, 200, 100)):
            session.add(
                Refund(
                    id=f"rf_one_read_{n}",
                    payment_id=payment.id,
                    amount=amount,
                    currency="usd",
                    status="succeeded",
                    created_by="stripe",
                    created_at=now - timedelta(seconds=amount),
                    updated_at=now,
                )
            )
        session.add(
            Receipt(
                id="rc_one_read",
                payment_id=payment.id,
                number="2026-000042",
                year=2026,
                sequence=42,
                amount=2000,
                currency="usd",
                issued_at=now,
            )
        )
    async with stripe_services.db.read() as session:
        refunds, receipt = await payments_repo.refunds_and_receipt_of(session, payment.id)
        assert [r.id for r in refunds] == ["rf_one_read_0", "rf_one_read_1", "rf_one_read_2"]
        assert receipt is not None
        assert receipt.id == "rc_one_read"
        by_two = await payments_repo.refunds_of(session, [payment.id])
        assert [r.id for r in refunds] == [r.id for r in by_two[payment.id]]
        assert await payments_repo.refunds_and_receipt_of(session, bare.id) == ([], None)


async def test_a_payment_with_an_unknown_card_takes_few_statements(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    buyer = Buyer()
    first = await api.post(PROCESS, json=payment_body(), headers=buyer.with_key())
    assert first.status_code == 201, first.text  # its customer is made

    with counting(stripe_services) as statements:
        paid = await api.post(PROCESS, json=payment_body(), headers=buyer.with_key())
    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "succeeded"
    assert len(statements) <= UNKNOWN_CARD_STATEMENTS, "\n".join(
        s.split("\n")[0][:100] for s in statements
    )
