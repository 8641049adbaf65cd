"""Checkout sessions through the API against the emulator, on SQLite and PostgreSQL: created by
the product's backend, paid with the session id only, at most once."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from azora_payments.config import Settings
from azora_payments.db.models import CheckoutSession
from azora_payments.db.types import utcnow
from azora_payments.jobs.checkout import expire_due_sessions
from azora_payments.services import Services
from tests.conftest import (
    bearer,
    emulator_clear_faults,
    emulator_faults,
    emulator_intents_for,
    emulator_settings,
    make_token,
    unique_user,
)

PUBLISHABLE_KEY = "pk_test_" + "azora" * 6


@pytest.fixture
def stripe_settings(database_url: str, tmp_path: Any, stripe_emulator: str) -> Settings:
    return emulator_settings(
        database_url,
        tmp_path,
        stripe_emulator,
        checkout_enabled=True,
        stripe_publishable_key=PUBLISHABLE_KEY,
    )


SESSIONS = "/api/checkout/sessions"
SERVICE = bearer(make_token("shop-backend", roles=["service"], email=None, lifetime=24 * 3600))
OTHER_SERVICE = bearer(
    make_token("other-backend", roles=["service"], email=None, lifetime=24 * 3600)
)
OPERATOR = bearer(
    make_token("ops_1", roles=["admin"], email="ops@azora.example", lifetime=24 * 3600)
)


def session_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {
            "sub": unique_user(),
            "email": "buyer@shop.example",
            "name": "Ada Buyer",
        },
        "amount": 2500,
        "currency": "EUR",
        "description": "Course: Linear Algebra",
        "metadata": {"order_id": f"ord_{uuid.uuid4().hex[:8]}"},
        "return_url": "https://shop.example/orders/42",
        "expires_in_minutes": 30,
    }
    body.update(overrides)
    return body


def with_key(headers: dict[str, str], key: str | None = None) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key or uuid.uuid4().hex}


async def create(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await api.post(SESSIONS, json=session_body(**overrides), headers=with_key(SERVICE))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def pay(
    api: httpx.AsyncClient, checkout_id: str, method: str = "pm_card_visa", *, save: bool = False
) -> httpx.Response:
    return await api.post(
        f"{SESSIONS}/{checkout_id}/pay",
        json={"payment_method_id": method, "save_payment_method": save},
    )


async def test_the_backend_creates_a_session(api: httpx.AsyncClient) -> None:
    body = session_body()
    before = utcnow()
    response = await api.post(SESSIONS, json=body, headers=with_key(SERVICE))
    assert response.status_code == 201, response.text
    created = response.json()
    assert re.fullmatch(r"cs_[0-9a-z]{32}", created["id"])
    assert created["url"] == f"/checkout/{created['id']}"
    assert created["status"] == "open"
    assert created["payment_id"] is None
    assert created["amount"] == 2500
    assert created["currency"] == "eur"
    assert created["customer"] == body["customer"]
    assert created["metadata"] == body["metadata"]
    assert created["return_url"] == body["return_url"]
    expires = created["expires_at"]
    assert expires.endswith("Z")
    from datetime import datetime

    at = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    assert before + timedelta(minutes=29) < at < utcnow() + timedelta(minutes=31)

    fetched = await api.get(f"{SESSIONS}/{created['id']}", headers=SERVICE)
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert (await api.get(f"{SESSIONS}/{created['id']}", headers=OPERATOR)).status_code == 200


async def test_one_order_gets_one_session(api: httpx.AsyncClient) -> None:
    body = session_body()
    headers = with_key(SERVICE)
    first = await api.post(SESSIONS, json=body, headers=headers)
    again = await api.post(SESSIONS, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await api.post(SESSIONS, json={**body, "amount": 50}, headers=headers)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


async def test_who_may_create_and_read_sessions(api: httpx.AsyncClient) -> None:
    body = session_body()
    assert (await api.post(SESSIONS, json=body, headers={"Idempotency-Key": "k"})).status_code == (
        401
    )
    customer = bearer(make_token("user_1"))
    refused = await api.post(SESSIONS, json=body, headers=with_key(customer))
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    by_operator = await api.post(SESSIONS, json=body, headers=with_key(OPERATOR))
    assert by_operator.status_code == 201
    created = await create(api)
    path = f"{SESSIONS}/{created['id']}"
    assert (await api.get(path)).status_code == 401
    assert (await api.get(path, headers=customer)).status_code == 403
    # Another backend's session is answered like one that does not exist.
    assert (await api.get(path, headers=OTHER_SERVICE)).json()["code"] == "not_found"
    assert (await api.get(f"{SESSIONS}/cs_unknown", headers=SERVICE)).status_code == 404
    unknown = f"{SESSIONS}/cs_{'a' * 32}"
    assert (await api.get(unknown, headers=SERVICE)).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": "2500"}, "amount"),
        ({"amount": 49}, "amount"),
        ({"currency": "xyz"}, "currency"),
        ({"metadata": {}}, "metadata"),
        ({"metadata": {"order_id": ""}}, "metadata"),
        ({"metadata": {"order_id": 42}}, "metadata.order_id"),
        ({"metadata": {"order_id": "o", "k" * 41: "v"}}, "metadata"),
        ({"return_url": "javascript:alert(1)"}, "return_url"),
        ({"return_url": "http://shop.example/orders/42"}, "return_url"),
        ({"return_url": "https:///no-host"}, "return_url"),
        ({"expires_in_minutes": 1}, "expires_in_minutes"),
        ({"expires_in_minutes": 24 * 60 + 1}, "expires_in_minutes"),
        ({"customer": {"email": "a@b.example"}}, "customer.sub"),
        ({"customer": {"sub": "u", "email": "nope"}}, "customer.email"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_invalid_sessions_are_422(
    api: httpx.AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    headers = with_key(SERVICE)
    response = await api.post(SESSIONS, json=session_body(**overrides), headers=headers)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    # Not stored: the key works with a good body.
    assert (await api.post(SESSIONS, json=session_body(), headers=headers)).status_code == 201


async def test_idempotency_key_is_required(api: httpx.AsyncClient) -> None:
    response = await api.post(SESSIONS, json=session_body(), headers=SERVICE)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"


async def test_paid_once_and_it_is_an_ordinary_payment(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    customer = unique_user()
    created = await create(api, customer={"sub": customer, "email": "ada@shop.example"})
    paid = await pay(api, created["id"], save=True)
    assert paid.status_code == 201, paid.text
    payment = paid.json()
    assert payment["status"] == "succeeded"
    assert (payment["amount"], payment["currency"]) == (2500, "eur")
    assert payment["metadata"] == created["metadata"]
    assert payment["checkout_session_id"] == created["id"]

    session = (await api.get(f"{SESSIONS}/{created['id']}", headers=SERVICE)).json()
    assert session["status"] == "complete"
    assert session["payment_id"] == payment["id"]
    assert session["completed_at"]

    owner = bearer(make_token(customer, email="ada@shop.example"))
    history = (await api.get("/api/payments/history", headers=owner)).json()
    assert [p["id"] for p in history["data"]] == [payment["id"]]
    methods = (await api.get("/api/payments/methods/list", headers=owner)).json()["data"]
    assert [m["last4"] for m in methods] == ["4242"]

    again = await pay(api, created["id"], "pm_card_mastercard")
    assert again.status_code == 409
    assert again.json()["code"] == "checkout_session_complete"
    assert again.json()["payment_id"] == payment["id"]
    intents = await emulator_intents_for(stripe_emulator, customer)
    assert [i["id"] for i in intents] == [payment["stripe_payment_intent_id"]]
    assert intents[0]["amount"] == 2500


async def test_a_decline_then_another_card_pays_the_same_session(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    customer = unique_user()
    created = await create(api, customer={"sub": customer})
    declined = await pay(api, created["id"], "pm_card_chargeDeclined")
    assert declined.status_code == 402, declined.text
    problem = declined.json()
    assert problem["code"] == "card_declined"
    assert problem["title"] == "Your card was declined."
    assert (await api.get(f"{SESSIONS}/{created['id']}", headers=SERVICE)).json()[
        "status"
    ] == "open"

    paid = await pay(api, created["id"], "pm_card_visa")
    assert paid.status_code == 201, paid.text
    assert paid.json()["id"] != problem["payment_id"]
    assert len(await emulator_intents_for(stripe_emulator, customer)) == 2
    session = (await api.get(f"{SESSIONS}/{created['id']}", headers=SERVICE)).json()
    assert (session["status"], session["payment_id"]) == ("complete", paid.json()["id"])


async def test_a_double_click_charges_once(api: httpx.AsyncClient, stripe_emulator: str) -> None:
    customer = unique_user()
    created = await create(api, customer={"sub": customer})
    answers = await asyncio.gather(*(pay(api, created["id"]) for _ in range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409}, [a.text for a in answers]
    ids = {a.json().get("id") or a.json().get("payment_id") for a in answers}
    assert len(ids) == 1
    assert len(await emulator_intents_for(stripe_emulator, customer)) == 1


async def test_a_retry_after_503_continues_the_same_attempt(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    customer = unique_user()
    created = await create(api, customer={"sub": customer})
    await emulator_faults(
        stripe_emulator, method="POST", path="^/v1/payment_intents$", status=500, times=2
    )
    try:
        down = await pay(api, created["id"])
    finally:
        await emulator_clear_faults(stripe_emulator)
    assert down.status_code == 503, down.text
    payment_id = down.json()["payment_id"]
    # Whatever the retry sends (a reloaded page, another card), it continues that attempt.
    again = await pay(api, created["id"], "pm_card_mastercard")
    assert again.status_code == 201, again.text
    assert again.json()["id"] == payment_id
    assert again.json()["payment_method"]["brand"] == "visa"
    assert len(await emulator_intents_for(stripe_emulator, customer)) == 1


async def test_three_d_secure_keeps_the_attempt_until_it_settles(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    customer = unique_user()
    created = await create(api, customer={"sub": customer})
    first = await pay(api, created["id"], "pm_card_threeDSecure2Required")
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "requires_action"
    assert first.json()["client_secret"]
    second = await pay(api, created["id"], "pm_card_visa")
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert len(await emulator_intents_for(stripe_emulator, customer)) == 1
    # Past its expiry, a session whose payment is still under way is not expired under it.
    await _move_expiry(stripe_services, created["id"], minutes=-1)
    await expire_due_sessions(stripe_services)
    assert (await api.get(f"{SESSIONS}/{created['id']}", headers=SERVICE)).json()[
        "status"
    ] == "open"


async def _move_expiry(services: Services, checkout_id: str, *, minutes: int) -> None:
    async with services.db.transaction() as session:
        await session.execute(
            update(CheckoutSession)
            .where(CheckoutSession.id == checkout_id)
            .values(expires_at=utcnow() + timedelta(minutes=minutes))
        )


async def test_an_expired_session_cannot_be_paid(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    customer = unique_user()
    created = await create(api, customer={"sub": customer})
    kept = await create(api)
    await _move_expiry(stripe_services, created["id"], minutes=-1)
    refused = await pay(api, created["id"])
    assert refused.status_code == 409
    assert refused.json()["code"] == "checkout_session_expired"
    assert await expire_due_sessions(stripe_services) == 1
    assert await expire_due_sessions(stripe_services) == 0
    session = (await api.get(f"{SESSIONS}/{created['id']}", headers=SERVICE)).json()
    assert session["status"] == "expired"
    assert (await api.get(f"{SESSIONS}/{kept['id']}", headers=SERVICE)).json()["status"] == "open"
    assert (await pay(api, created["id"])).json()["code"] == "checkout_session_expired"
    assert await emulator_intents_for(stripe_emulator, customer) == []


async def test_unknown_sessions_and_bad_bodies(api: httpx.AsyncClient) -> None:
    unknown = await pay(api, f"cs_{'b' * 32}")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"
    assert (await pay(api, "cs_short")).status_code == 404
    created = await create(api)
    bad = await api.post(f"{SESSIONS}/{created['id']}/pay", json={"payment_method_id": "tok_x"})
    assert bad.status_code == 422
    broken = await api.post(f"{SESSIONS}/{created['id']}/pay", content=b"{")
    assert broken.json()["code"] == "invalid_json"


async def test_a_session_cannot_use_another_customers_card(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    owner = unique_user()
    saved = await api.post(
        "/api/payments/methods/save",
        json={"payment_method_id": "pm_card_visa"},
        headers=bearer(make_token(owner)),
    )
    assert saved.status_code == 201
    thief = unique_user()
    created = await create(api, customer={"sub": thief})
    refused = await pay(api, created["id"], saved.json()["id"])
    assert refused.status_code == 404
    assert refused.json()["code"] == "payment_method_not_found"
    assert await emulator_intents_for(stripe_emulator, thief) == []
    # Nothing was started: the session still takes the customer's own card.
    assert (await pay(api, created["id"])).status_code == 201


async def test_an_attempt_whose_key_was_forgotten_is_never_charged_again(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """Keys live IDEMPOTENCY_KEY_TTL_HOURS; a payment still under way after that is answered as
    it is, not started afresh."""
    from sqlalchemy import delete

    from azora_payments.db.models import IdempotencyKey

    customer = unique_user()
    created = await create(api, customer={"sub": customer})
    first = await pay(api, created["id"], "pm_card_threeDSecure2Required")
    async with stripe_services.db.transaction() as session:
        await session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.user_id == f"checkout:{created['id']}")
        )
    again = await pay(api, created["id"], "pm_card_visa")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "requires_action"
    assert len(await emulator_intents_for(stripe_emulator, customer)) == 1


async def test_a_session_stays_paid_by_its_first_payment(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    """Stripe reporting money taken on a second attempt (one we had seen fail) leaves the session
    paid by the first, and tells the operators."""
    from sqlalchemy import select

    from azora_payments.db.models import AuditRecord, Payment
    from azora_payments.domain import checkout_state

    created = await create(api)
    declined = (await pay(api, created["id"], "pm_card_chargeDeclined")).json()
    paid = (await pay(api, created["id"])).json()
    async with stripe_services.db.transaction() as session:
        late = await session.get(Payment, declined["payment_id"])
        assert late is not None
        await checkout_state.payment_succeeded(session, late)
        again = await session.get(Payment, paid["id"])
        assert again is not None
        await checkout_state.payment_succeeded(session, again)  # already complete: no change
    session_now = (await api.get(f"{SESSIONS}/{created['id']}", headers=SERVICE)).json()
    assert session_now["payment_id"] == paid["id"]
    async with stripe_services.db.read() as session:
        actions = (
            await session.scalars(
                select(AuditRecord.action).where(AuditRecord.payment_id == declined["payment_id"])
            )
        ).all()
    assert "checkout_session.paid_again" in actions


async def test_the_expiry_job_runs_from_the_queue(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    from azora_payments.jobs.registry import JobContext, get_kind

    created = await create(api)
    await _move_expiry(stripe_services, created["id"], minutes=-5)
    kind = get_kind("checkout.expire")
    ctx = JobContext(
        services=stripe_services,
        job_id=1,
        kind=kind.name,
        attempt=1,
        max_attempts=kind.max_attempts,
        scheduled_for=utcnow(),
        worker_id="test",
    )
    await kind.handler(ctx, {})
    assert (await api.get(f"{SESSIONS}/{created['id']}", headers=SERVICE)).json()[
        "status"
    ] == "expired"


async def test_a_loopback_return_url_may_be_plain_http(api: httpx.AsyncClient) -> None:
    created = await create(api, return_url="http://127.0.0.1:3000/orders/42")
    assert created["return_url"] == "http://127.0.0.1:3000/orders/42"
