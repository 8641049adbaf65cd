"""Issue 9, items 3 and 4: decline reasons that would help a card tester are told as
`generic_decline` in the answer, the history and every notification, while operators see
Stripe's real one; and the failure stored is exactly the 402's. On both databases."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from azora_payments.db.models import Notification
from azora_payments.services import Services
from tests.conftest import (
    asgi_client,
    bearer,
    emulator_clear_faults,
    emulator_faults,
    make_token,
)
from tests.test_payments import PROCESS, Buyer, payment_body

OPERATOR = bearer(make_token("ops_1", roles=["admin"], lifetime=3600))


async def decline_on_demand(emulator: str, **rule: Any) -> None:
    async with httpx.AsyncClient() as http:
        (await http.post(f"{emulator}/_azora/declines", json=rule)).raise_for_status()


@pytest.fixture
async def emulator(stripe_emulator: str) -> AsyncIterator[str]:
    yield stripe_emulator
    async with httpx.AsyncClient() as http:
        await http.delete(f"{stripe_emulator}/_azora/declines")


@pytest.mark.parametrize(
    ("method", "on_demand", "reason"),
    [
        ("pm_card_chargeDeclinedStolenCard", None, "stolen_card"),
        ("pm_card_chargeDeclinedLostCard", None, "lost_card"),
        ("pm_card_radarBlock", None, "fraudulent"),
        ("pm_card_visa", "pickup_card", "pickup_card"),
        ("pm_card_visa", "merchant_blacklist", "merchant_blacklist"),
        ("pm_card_visa", "restricted_card", "restricted_card"),
        ("pm_card_visa", "security_violation", "security_violation"),
    ],
)
async def test_a_testers_reason_is_told_as_generic_decline(
    api: httpx.AsyncClient,
    stripe_services: Services,
    emulator: str,
    method: str,
    on_demand: str | None,
    reason: str,
) -> None:
    if on_demand is not None:
        await decline_on_demand(emulator, decline_code=on_demand, card="4242424242424242")
    buyer = Buyer()
    declined = await api.post(
        PROCESS, json=payment_body(payment_method_id=method), headers=buyer.with_key()
    )
    assert declined.status_code == 402, declined.text
    problem = declined.json()
    assert (problem["code"], problem["decline_code"]) == ("card_declined", "generic_decline")
    assert problem["title"] == problem["detail"] == "Your card was declined."
    assert reason not in declined.text

    # The customer's history and the payment itself: the same failure as the 402.
    history = await api.get("/api/payments/history", headers=buyer.headers)
    [payment] = history.json()["data"]
    assert payment["id"] == problem["payment_id"]
    assert payment["failure"] == {
        "code": "card_declined",
        "decline_code": "generic_decline",
        "message": "Your card was declined.",
    }
    assert reason not in history.text
    one = await api.get(f"/api/payments/{payment['id']}", headers=buyer.headers)
    assert reason not in one.text

    # The product's backend is told the same (the notification row is the payload).
    async with stripe_services.db.read() as session:
        rows = list(await session.scalars(select(Notification)))
    assert [row.type for row in rows] == ["payment.failed"]
    assert rows[0].data["failure"]["decline_code"] == "generic_decline"
    assert reason not in json.dumps(rows[0].data)

    # Operators see Stripe's real reason, in their view and in the audit log.
    seen = (await api.get(f"/api/payments/{payment['id']}", headers=OPERATOR)).json()
    assert seen["failure"]["decline_code"] == "generic_decline"
    assert seen["failure"]["stripe_decline_code"] == reason
    audit = (await api.get(f"/api/audit?payment_id={payment['id']}", headers=OPERATOR)).json()
    failed = [r for r in audit["data"] if r["action"] == "payment.failed"]
    assert failed
    assert failed[0]["details"]["stripe_decline_code"] == reason
    listed = await api.get(f"/api/payments/history?user_id={buyer.id}", headers=OPERATOR)
    assert listed.json()["data"][0]["failure"]["stripe_decline_code"] == reason


async def test_a_customers_own_reason_is_told_as_it_is(
    api: httpx.AsyncClient, emulator: str
) -> None:
    buyer = Buyer()
    body = payment_body(payment_method_id="pm_card_visa_chargeDeclinedInsufficientFunds")
    declined = await api.post(PROCESS, json=body, headers=buyer.with_key())
    assert declined.status_code == 402
    assert declined.json()["decline_code"] == "insufficient_funds"
    payment = await api.get(f"/api/payments/{declined.json()['payment_id']}", headers=OPERATOR)
    assert payment.json()["failure"]["decline_code"] == "insufficient_funds"
    assert payment.json()["failure"]["stripe_decline_code"] == "insufficient_funds"


async def test_the_notification_sent_is_masked_too(
    database_url: str, tmp_path: Any, stripe_emulator: str
) -> None:
    """Delivered to the product's backend (not only stored): masked."""
    from tests.conftest import emulator_settings, open_services
    from tests.test_notifications import NOTIFY_SECRET, Backend, deliver_due

    backend = Backend()
    try:
        settings = emulator_settings(
            database_url,
            tmp_path,
            stripe_emulator,
            notify_url=backend.url,
            notify_secret=NOTIFY_SECRET,
        )
        async with open_services(settings) as services, asgi_client(settings, services) as api:
            body = payment_body(payment_method_id="pm_card_chargeDeclinedStolenCard")
            declined = await api.post(PROCESS, json=body, headers=Buyer().with_key())
            assert declined.status_code == 402
            await deliver_due(services)
        [told] = backend.events()
        assert told["type"] == "payment.failed"
        assert told["data"]["failure"]["decline_code"] == "generic_decline"
        assert "stolen" not in json.dumps(told)
    finally:
        backend.close()


# ------------------------------------------------------------------ item 4


async def test_the_stored_failure_is_the_402s(
    api: httpx.AsyncClient, stripe_services: Services, stripe_emulator: str
) -> None:
    """Stripe's error answer and its intent snapshot disagree: what the 402 says is what the
    payment keeps, everywhere."""
    buyer = Buyer()
    intent = {
        "id": "pi_disagreeing0001",
        "object": "payment_intent",
        "status": "requires_payment_method",
        "amount": 2000,
        "currency": "usd",
        "client_secret": "pi_disagreeing0001_secret_x",
        "latest_charge": "ch_disagreeing0001",
        "payment_method": None,
        "customer": None,
        "metadata": {},
        "last_payment_error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "do_not_honor",
            "message": "Your card was declined.",
            "charge": "ch_disagreeing0001",
        },
    }
    error = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
        "charge": "ch_disagreeing0001",
        "payment_intent": intent,
    }
    await emulator_faults(
        stripe_emulator,
        method="POST",
        path="^/v1/payment_intents$",
        status=402,
        body={"error": error},
    )
    try:
        declined = await api.post(PROCESS, json=payment_body(), headers=buyer.with_key())
    finally:
        await emulator_clear_faults(stripe_emulator)
    assert declined.status_code == 402, declined.text
    problem = declined.json()
    assert problem["decline_code"] == "insufficient_funds"
    url = f"/api/payments/{problem['payment_id']}"
    payment = (await api.get(url, headers=buyer.headers)).json()
    assert payment["status"] == "failed"
    assert payment["failure"] == {
        "code": problem["code"],
        "decline_code": problem["decline_code"],
        "message": problem["detail"],
    }
    from azora_payments.db.models import CardDecline

    async with stripe_services.db.read() as session:
        [told] = list(await session.scalars(select(Notification)))
        [counted] = list(await session.scalars(select(CardDecline)))
    assert told.data["failure"] == payment["failure"]
    assert counted.stripe_decline_code == "insufficient_funds"
    assert counted.payment_id == payment["id"]


def test_failures_recorded_before_are_masked_by_the_migration(tmp_path: Any) -> None:
    """A payment that failed with `stolen_card` before this change: after the migration, the
    customer is told `generic_decline` and operators still see the real reason."""
    import sqlalchemy as sa
    from alembic import command

    from azora_payments.db.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0004")
    engine = sa.create_engine(url)
    columns = (
        "id, user_id, status, amount, currency, amount_refunded, metadata, save_payment_method, "
        "disputed, failure_code, failure_decline_code, failure_message, created_at, updated_at"
    )
    with engine.begin() as conn:
        for ident, decline in (
            ("pay_old_stolen", "stolen_card"),
            ("pay_old_funds", "insufficient_funds"),
        ):
            conn.execute(
                sa.text(
                    f"INSERT INTO payments ({columns}) VALUES (:id, 'u', 'failed', 2000, 'usd', 0, "
                    "'{}', 0, 0, 'card_declined', :decline, 'Your card was declined.', "
                    "'2026-11-30 10:00:00', '2026-11-30 10:00:00')"
                ),
                {"id": ident, "decline": decline},
            )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        query = sa.text("SELECT id, failure_decline_code, stripe_decline_code FROM payments")
        rows = {row[0]: tuple(row[1:]) for row in conn.execute(query)}
    engine.dispose()
    assert rows == {
        "pay_old_stolen": ("generic_decline", "stolen_card"),
        "pay_old_funds": ("insufficient_funds", "insufficient_funds"),
    }
