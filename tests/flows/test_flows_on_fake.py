"""The domain flows on the fake Stripe (tests/fake_stripe.py), no emulator: the payment flow
(charge, decline, 3-D Secure waiting), the refund flow and reconciliation, through the API as a
client sees them, with the outcomes the emulator suites assert (test_payments, test_refunds,
webhooks/test_end_to_end). The fake is held to the emulator by tests/test_gateway_contract.py;
the emulator suites stay for everything end to end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from azora_payments.config import Settings
from azora_payments.db.models import Payment
from azora_payments.db.types import utcnow
from azora_payments.domain import reconcile
from azora_payments.services import Services
from tests.conftest import (
    make_settings,
    stack_fixtures,
)
from tests.fake_stripe import FakeStripeGateway
from tests.test_payments import PROCESS, Buyer, payment_body
from tests.test_refunds import REFUND, operator
from tests.webhooks.conftest import seed_payment


@pytest.fixture
def fake() -> FakeStripeGateway:
    return FakeStripeGateway()


@pytest.fixture
def fake_settings(database_url: str, tmp_path: Any) -> Settings:
    # Reconciliation settles what was last touched a second ago or more.
    return make_settings(
        database_url, receipt_storage=str(tmp_path / "receipts"), reconcile_after_seconds=1
    )


fake_services, http = stack_fixtures(
    "fake_settings", services="fake_services", client="http", stripe="fake"
)


async def pay(http: httpx.AsyncClient, buyer: Buyer, **overrides: Any) -> dict[str, Any]:
    response = await http.post(PROCESS, json=payment_body(**overrides), headers=buyer.with_key())
    assert response.status_code == 201, response.text
    paid: dict[str, Any] = response.json()
    return paid


async def test_a_charge_succeeds(http: httpx.AsyncClient, fake: FakeStripeGateway) -> None:
    buyer = Buyer()
    payment = await pay(http, buyer)
    assert payment["id"].startswith("pay_")
    assert (payment["status"], payment["amount"], payment["currency"]) == ("succeeded", 2000, "usd")
    assert payment["amount_refunded"] == 0
    assert payment["description"] == "Course: Linear Algebra"
    assert payment["metadata"] == {"order_id": "ord_42"}
    assert (payment["payment_method"]["brand"], payment["payment_method"]["last4"]) == (
        "visa",
        "4242",
    )
    assert payment["stripe_payment_intent_id"].startswith("pi_")
    assert (payment["client_secret"], payment["failure"], payment["refunds"]) == (None, None, [])
    # One intent at Stripe, for this payment, with our metadata.
    intents = await fake.search_payment_intents(payment["id"])
    assert [i.id for i in intents] == [payment["stripe_payment_intent_id"]]
    assert intents[0].metadata["azora_user_id"] == buyer.id
    assert intents[0].metadata["order_id"] == "ord_42"
    fetched = await http.get(f"/api/payments/{payment['id']}", headers=buyer.headers)
    assert fetched.status_code == 200
    assert fetched.json() == payment


async def test_a_replay_is_the_first_answer_and_charges_once(
    http: httpx.AsyncClient, fake: FakeStripeGateway
) -> None:
    buyer = Buyer()
    headers = buyer.with_key()
    first = await http.post(PROCESS, json=payment_body(), headers=headers)
    again = await http.post(PROCESS, json=payment_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.text == first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await fake.search_payment_intents(first.json()["id"])) == 1


@pytest.mark.parametrize(
    ("method", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_a_decline_is_402_kept_in_history_and_its_intent_closed(
    http: httpx.AsyncClient, fake: FakeStripeGateway, method: str, decline_code: str
) -> None:
    buyer = Buyer()
    response = await http.post(
        PROCESS, json=payment_body(payment_method_id=method), headers=buyer.with_key()
    )
    assert response.status_code == 402, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["decline_code"]) == ("card_declined", decline_code)
    assert problem["type"] == "https://docs.azora.dev/errors/card_declined"
    assert problem["payment_id"].startswith("pay_")
    assert "stripe" not in problem["title"].lower()
    assert problem["request_id"] == response.headers["x-request-id"]

    payment = (
        await http.get(f"/api/payments/{problem['payment_id']}", headers=buyer.headers)
    ).json()
    assert payment["status"] == "failed"
    assert (payment["failure"]["code"], payment["failure"]["decline_code"]) == (
        "card_declined",
        decline_code,
    )
    assert payment["failure"]["message"]
    history = (await http.get("/api/payments/history", headers=buyer.headers)).json()
    assert [p["id"] for p in history["data"]] == [problem["payment_id"]]
    # Closed at once, so its client_secret cannot try another card.
    (intent,) = await fake.search_payment_intents(problem["payment_id"])
    assert intent.status == "canceled"


async def test_three_d_secure_waits_then_reconciliation_settles_it(
    http: httpx.AsyncClient, fake_services: Services, fake: FakeStripeGateway
) -> None:
    buyer = Buyer()
    waiting = await pay(http, buyer, payment_method_id="pm_card_threeDSecure2Required")
    assert waiting["status"] == "requires_action"
    assert waiting["client_secret"]
    assert waiting["client_secret"].startswith(waiting["stripe_payment_intent_id"])
    # Nothing to settle yet: the buyer has not authenticated.
    await backdate(fake_services, waiting["id"])
    first = await reconcile.reconcile(fake_services)
    assert (first.payments_checked, first.changes) == (1, [])
    fake.authenticate(waiting["stripe_payment_intent_id"], waiting["client_secret"])
    # A pass a threshold later reads it again (one re-read per threshold).
    report = await reconcile.reconcile(fake_services, now=utcnow() + timedelta(hours=1))
    assert report.payments_checked == 1
    assert any("requires_action -> succeeded" in change for change in report.changes), report
    settled = (await http.get(f"/api/payments/{waiting['id']}", headers=buyer.headers)).json()
    assert (settled["status"], settled["client_secret"]) == ("succeeded", None)


async def test_refunds_partial_then_the_rest_then_nothing_left(
    http: httpx.AsyncClient, fake: FakeStripeGateway
) -> None:
    payment = await pay(http, Buyer())
    first = await http.post(
        REFUND,
        json={"payment_id": payment["id"], "amount": 500, "reason": "requested_by_customer"},
        headers=operator(),
    )
    assert first.status_code == 201, first.text
    refund = first.json()
    assert refund["id"].startswith("rf_")
    assert (refund["payment_id"], refund["amount"], refund["currency"]) == (
        payment["id"],
        500,
        "usd",
    )
    assert (refund["status"], refund["reason"]) == ("succeeded", "requested_by_customer")
    assert refund["stripe_refund_id"].startswith("re_")
    rest = await http.post(REFUND, json={"payment_id": payment["id"]}, headers=operator())
    assert rest.status_code == 201, rest.text
    assert rest.json()["amount"] == 1500
    headers = operator()
    none_left = await http.post(REFUND, json={"payment_id": payment["id"]}, headers=headers)
    assert none_left.status_code == 422
    assert none_left.json()["code"] == "amount_exceeds_refundable"
    replay = await http.post(REFUND, json={"payment_id": payment["id"]}, headers=headers)
    assert replay.text == none_left.text
    assert replay.headers["idempotent-replayed"] == "true"

    after = (await http.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    assert after["amount_refunded"] == 2000
    assert [r["id"] for r in after["refunds"]] == [refund["id"], rest.json()["id"]]
    at_stripe = await fake.list_refunds(payment["stripe_payment_intent_id"])
    assert sorted(r.amount for r in at_stripe) == [500, 1500]


async def test_a_declined_payment_is_not_refundable(http: httpx.AsyncClient) -> None:
    response = await http.post(
        PROCESS,
        json=payment_body(payment_method_id="pm_card_chargeDeclined"),
        headers=Buyer().with_key(),
    )
    refused = await http.post(
        REFUND, json={"payment_id": response.json()["payment_id"]}, headers=operator()
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "payment_not_refundable"


async def backdate(services: Services, *payment_ids: str) -> None:
    """As if last touched an hour ago (and created two minutes ago): due for reconciliation."""
    async with services.db.transaction() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id.in_(payment_ids))
            .values(
                updated_at=utcnow() - timedelta(hours=1),
                created_at=utcnow() - timedelta(minutes=2),
            )
        )


async def test_reconciliation_settles_what_the_service_never_heard(
    http: httpx.AsyncClient, fake_services: Services, fake: FakeStripeGateway
) -> None:
    buyer = Buyer()
    paid = await pay(http, buyer)
    customer_id = (await fake.retrieve_payment_intent(paid["stripe_payment_intent_id"])).customer
    # Never reached Stripe; and reached it, but its answer never came back.
    lost = await seed_payment(fake_services, status="processing", pi_id=None, user_id=buyer.id)
    unanswered = await seed_payment(
        fake_services,
        status="processing",
        pi_id=None,
        user_id=buyer.id,
        stripe_customer_id=customer_id,
    )
    made = await fake.create_payment_intent(
        payment_id=unanswered.id,
        user_id=buyer.id,
        amount=2000,
        currency="usd",
        customer_id=customer_id or "",
        payment_method_id="pm_card_visa",
        description=None,
        metadata={},
        save_payment_method=False,
    )
    await backdate(fake_services, lost.id, unanswered.id)

    report = await reconcile.reconcile(fake_services)
    assert report.errors == []
    assert f"{lost.id}: processing -> failed" in "\n".join(report.changes)
    c = (await http.get(f"/api/payments/{lost.id}", headers=operator())).json()
    d = (await http.get(f"/api/payments/{unanswered.id}", headers=operator())).json()
    assert (c["status"], c["failure"]["code"]) == ("failed", "stripe_unreachable")
    assert (d["status"], d["stripe_payment_intent_id"]) == ("succeeded", made.id)
    # Stripe held nothing for the lost one, and was asked for nothing new.
    assert await fake.search_payment_intents(lost.id) == []
    again = await reconcile.reconcile(fake_services)
    assert (again.changes, again.errors) == ([], [])
