"""Payments through the API against the emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from azora_payments.db.models import IdempotencyKey
from azora_payments.services import Services
from tests.conftest import (
    bearer,
    emulator_faulted,
    emulator_intents_for,
    make_token,
    unique_user,
)

PROCESS = "/api/payments/process"


def payment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": 2000,
        "currency": "usd",
        "payment_method_id": "pm_card_visa",
        "description": "Course: Linear Algebra",
        "metadata": {"order_id": "ord_42"},
    }
    body.update(overrides)
    return body


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


class Buyer:
    def __init__(self) -> None:
        self.id = unique_user()
        self.headers = bearer(make_token(self.id))

    def with_key(self, idem: str | None = None) -> dict[str, str]:
        return {**self.headers, "Idempotency-Key": idem or uuid.uuid4().hex}


async def test_successful_payment(api: httpx.AsyncClient, stripe_emulator: str) -> None:
    buyer = Buyer()
    response = await api.post(PROCESS, json=payment_body(), headers=buyer.with_key())
    assert response.status_code == 201, response.text
    payment = response.json()
    assert payment["id"].startswith("pay_")
    assert payment["status"] == "succeeded"
    assert payment["amount"] == 2000
    assert payment["currency"] == "usd"
    assert payment["amount_refunded"] == 0
    assert payment["description"] == "Course: Linear Algebra"
    assert payment["metadata"] == {"order_id": "ord_42"}
    assert payment["payment_method"]["brand"] == "visa"
    assert payment["payment_method"]["last4"] == "4242"
    assert payment["stripe_payment_intent_id"].startswith("pi_")
    assert payment["client_secret"] is None
    assert payment["failure"] is None
    assert payment["refunds"] == []
    assert payment["disputed"] is False
    assert payment["created_at"].endswith("Z")
    assert "user_id" not in payment

    intents = await emulator_intents_for(stripe_emulator, buyer.id)
    assert len(intents) == 1
    assert intents[0]["id"] == payment["stripe_payment_intent_id"]
    assert intents[0]["metadata"]["azora_payment_id"] == payment["id"]
    assert intents[0]["metadata"]["order_id"] == "ord_42"
    assert intents[0]["description"] == "Course: Linear Algebra"

    fetched = await api.get(f"/api/payments/{payment['id']}", headers=buyer.headers)
    assert fetched.status_code == 200
    assert fetched.json() == payment


async def test_currency_is_case_insensitive_and_lower_on_output(api: httpx.AsyncClient) -> None:
    response = await api.post(
        PROCESS, json=payment_body(currency="JPY", amount=500), headers=Buyer().with_key()
    )
    assert response.status_code == 201, response.text
    assert response.json()["currency"] == "jpy"
    assert response.json()["amount"] == 500


async def test_three_d_secure_requires_action(api: httpx.AsyncClient) -> None:
    buyer = Buyer()
    response = await api.post(
        PROCESS,
        json=payment_body(payment_method_id="pm_card_threeDSecure2Required"),
        headers=buyer.with_key(),
    )
    assert response.status_code == 201, response.text
    payment = response.json()
    assert payment["status"] == "requires_action"
    assert payment["client_secret"]
    assert payment["client_secret"].startswith(payment["stripe_payment_intent_id"])


@pytest.mark.parametrize(
    ("method", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
    ],
)
async def test_decline_is_402_and_kept_in_history(
    api: httpx.AsyncClient, method: str, code: str, decline_code: str
) -> None:
    buyer = Buyer()
    response = await api.post(
        PROCESS, json=payment_body(payment_method_id=method), headers=buyer.with_key()
    )
    assert response.status_code == 402, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == code
    assert problem["decline_code"] == decline_code
    assert problem["type"] == f"https://docs.azora.dev/errors/{code}"
    assert problem["payment_id"].startswith("pay_")
    assert "stripe" not in problem["title"].lower()
    assert problem["request_id"] == response.headers["x-request-id"]

    payment = (
        await api.get(f"/api/payments/{problem['payment_id']}", headers=buyer.headers)
    ).json()
    assert payment["status"] == "failed"
    assert payment["failure"]["code"] == code
    assert payment["failure"]["decline_code"] == decline_code
    assert payment["failure"]["message"]
    history = (await api.get("/api/payments/history", headers=buyer.headers)).json()
    assert [p["id"] for p in history["data"]] == [problem["payment_id"]]


async def test_replay_returns_the_first_answer(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    buyer = Buyer()
    headers = buyer.with_key()
    first = await api.post(PROCESS, json=payment_body(), headers=headers)
    second = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert len(await emulator_intents_for(stripe_emulator, buyer.id)) == 1


async def test_decline_is_replayed_too(api: httpx.AsyncClient, stripe_emulator: str) -> None:
    buyer = Buyer()
    headers = buyer.with_key()
    body = payment_body(payment_method_id="pm_card_chargeDeclined")
    first = await api.post(PROCESS, json=body, headers=headers)
    second = await api.post(PROCESS, json=body, headers=headers)
    assert first.status_code == second.status_code == 402
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert len(await emulator_intents_for(stripe_emulator, buyer.id)) == 1


async def test_same_key_other_body_is_422(api: httpx.AsyncClient) -> None:
    buyer = Buyer()
    headers = buyer.with_key()
    assert (await api.post(PROCESS, json=payment_body(), headers=headers)).status_code == 201
    reused = await api.post(PROCESS, json=payment_body(amount=2100), headers=headers)
    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"


async def test_keys_are_scoped_to_the_caller(api: httpx.AsyncClient) -> None:
    shared = uuid.uuid4().hex
    a = await api.post(PROCESS, json=payment_body(), headers=Buyer().with_key(shared))
    b = await api.post(PROCESS, json=payment_body(), headers=Buyer().with_key(shared))
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "idempotency_key_required"),
        ("", "idempotency_key_invalid"),
        ("x" * 256, "idempotency_key_invalid"),
        ("tab\there", "idempotency_key_invalid"),
    ],
)
async def test_idempotency_key_checks(
    api: httpx.AsyncClient, header: str | None, code: str
) -> None:
    buyer = Buyer()
    headers = dict(buyer.headers)
    if header is not None:
        headers["Idempotency-Key"] = header
    response = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == code


async def test_check_order(api: httpx.AsyncClient) -> None:
    """401 before 400 before idempotency 400 before 422."""
    assert (await api.post(PROCESS, content=b"{", headers=key())).status_code == 401
    buyer = Buyer()
    bad_json = await api.post(PROCESS, content=b"{", headers=buyer.headers)
    assert bad_json.json()["code"] == "invalid_json"
    no_key_bad_body = await api.post(PROCESS, json={"amount": "1"}, headers=buyer.headers)
    assert no_key_bad_body.json()["code"] == "idempotency_key_required"
    invalid = await api.post(PROCESS, json={"amount": "1"}, headers=buyer.with_key())
    assert invalid.status_code == 422


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": "2000"}, "amount"),
        ({"amount": 20.0}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": 49}, "amount"),
        ({"amount": 100_000_000}, "amount"),
        ({"amount": 29, "currency": "gbp"}, "amount"),
        ({"amount": 1005, "currency": "bhd"}, "amount"),
        ({"currency": "xyz"}, "currency"),
        ({"currency": "usdd"}, "currency"),
        ({"payment_method_id": "tok_visa"}, "payment_method_id"),
        ({"metadata": {"order_id": 42}}, "metadata.order_id"),
        ({"metadata": {"k" * 41: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 501}}, "metadata.k"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
        ({"receipt_email": "not-an-email"}, "receipt_email"),
        ({"surprise": 1}, "surprise"),
        ({"save_payment_method": "true"}, "save_payment_method"),
    ],
)
async def test_invalid_bodies_are_422_and_store_nothing(
    api: httpx.AsyncClient, stripe_emulator: str, overrides: dict[str, Any], field: str
) -> None:
    buyer = Buyer()
    headers = buyer.with_key()
    response = await api.post(PROCESS, json=payment_body(**overrides), headers=headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert field in [e["field"] for e in problem["errors"]]
    assert (await api.get("/api/payments/history", headers=buyer.headers)).json()["data"] == []
    assert await emulator_intents_for(stripe_emulator, buyer.id) == []
    # Not stored: the same key now works with a good body.
    assert (await api.post(PROCESS, json=payment_body(), headers=headers)).status_code == 201


async def test_three_decimal_amount_ending_in_zero_is_fine(api: httpx.AsyncClient) -> None:
    response = await api.post(
        PROCESS, json=payment_body(amount=1010, currency="kwd"), headers=Buyer().with_key()
    )
    assert response.status_code == 201, response.text


async def test_another_users_saved_method_is_404(api: httpx.AsyncClient) -> None:
    owner, thief = Buyer(), Buyer()
    saved = await api.post(
        "/api/payments/methods/save",
        json={"payment_method_id": "pm_card_visa"},
        headers=owner.headers,
    )
    pm = saved.json()["id"]
    response = await api.post(
        PROCESS, json=payment_body(payment_method_id=pm), headers=thief.with_key()
    )
    assert response.status_code == 404
    assert response.json()["code"] == "payment_method_not_found"
    assert (await api.get("/api/payments/history", headers=thief.headers)).json()["data"] == []
    # The owner can pay with it.
    paid = await api.post(
        PROCESS, json=payment_body(payment_method_id=pm), headers=owner.with_key()
    )
    assert paid.status_code == 201
    assert paid.json()["payment_method"]["last4"] == "4242"


async def test_save_payment_method_lists_the_card(api: httpx.AsyncClient) -> None:
    buyer = Buyer()
    response = await api.post(
        PROCESS, json=payment_body(save_payment_method=True), headers=buyer.with_key()
    )
    assert response.status_code == 201
    methods = (await api.get("/api/payments/methods/list", headers=buyer.headers)).json()["data"]
    assert len(methods) == 1
    assert methods[0]["last4"] == "4242"


async def test_stripe_down_is_503_then_retry_continues(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    buyer = Buyer()
    headers = buyer.with_key()
    # More failures than the gateway retries (1 retry in the tests): Stripe looks down.
    async with emulator_faulted(
        stripe_emulator, method="POST", path="^/v1/payment_intents$", status=500, times=2
    ):
        down = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert down.status_code == 503, down.text
    problem = down.json()
    assert problem["code"] == "service_unavailable"
    assert problem["retryable"] is True
    assert down.headers["retry-after"]
    payment_id = problem["payment_id"]
    pending = (await api.get(f"/api/payments/{payment_id}", headers=buyer.headers)).json()
    assert pending["status"] == "processing"

    again = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == payment_id
    assert again.json()["status"] == "succeeded"
    assert "idempotent-replayed" not in again.headers
    assert len(await emulator_intents_for(stripe_emulator, buyer.id)) == 1


async def test_answer_lost_after_stripe_charged_never_charges_twice(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    """Stripe created and confirmed the intent, but every answer was lost on the way back."""
    buyer = Buyer()
    headers = buyer.with_key()
    async with emulator_faulted(
        stripe_emulator,
        method="POST",
        path="^/v1/payment_intents$",
        status=500,
        times=2,
        after=True,
    ):
        lost = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert lost.status_code == 503
    again = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert again.status_code == 201
    assert again.json()["status"] == "succeeded"
    intents = await emulator_intents_for(stripe_emulator, buyer.id)
    assert [i["id"] for i in intents] == [again.json()["stripe_payment_intent_id"]]


async def test_fifty_concurrent_identical_requests(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    buyer = Buyer()
    headers = buyer.with_key()
    responses = await asyncio.gather(
        *[api.post(PROCESS, json=payment_body(), headers=headers) for _ in range(50)]
    )
    statuses = {r.status_code for r in responses}
    assert statuses == {201}, [r.text for r in responses if r.status_code != 201][:3]
    assert len({r.text for r in responses}) == 1
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
    assert len(await emulator_intents_for(stripe_emulator, buyer.id)) == 1


async def test_redis_fast_path_replays_without_the_database(
    stripe_services: Services, api: httpx.AsyncClient, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    stripe_services.idempotency.redis = aioredis.from_url(redis_url)
    try:
        buyer = Buyer()
        headers = buyer.with_key()
        first = await api.post(PROCESS, json=payment_body(), headers=headers)
        assert first.status_code == 201
        # With the key row gone from the database, only Redis can answer the replay.
        async with stripe_services.db.transaction() as session:
            await session.execute(delete(IdempotencyKey))
        replay = await api.post(PROCESS, json=payment_body(), headers=headers)
        assert replay.json() == first.json()
        assert replay.headers["idempotent-replayed"] == "true"
        reused = await api.post(PROCESS, json=payment_body(amount=999), headers=headers)
        assert reused.json()["code"] == "idempotency_key_reused"
    finally:
        await stripe_services.idempotency.redis.aclose()


async def test_redis_down_is_only_slower(stripe_services: Services, api: httpx.AsyncClient) -> None:
    import redis.asyncio as aioredis

    stripe_services.idempotency.redis = aioredis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2
    )
    try:
        buyer = Buyer()
        headers = buyer.with_key()
        first = await api.post(PROCESS, json=payment_body(), headers=headers)
        replay = await api.post(PROCESS, json=payment_body(), headers=headers)
        assert first.status_code == 201
        assert replay.json() == first.json()
        assert replay.headers["idempotent-replayed"] == "true"
    finally:
        await stripe_services.idempotency.redis.aclose()


async def test_expired_keys_are_purged(api: httpx.AsyncClient, stripe_services: Services) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from azora_payments.db.types import utcnow

    buyer = Buyer()
    await api.post(PROCESS, json=payment_body(), headers=buyer.with_key())
    await api.post(PROCESS, json=payment_body(), headers=buyer.with_key())
    async with stripe_services.db.transaction() as session:
        first_id = await session.scalar(select(func.min(IdempotencyKey.id)))
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == first_id)
            .values(created_at=utcnow() - timedelta(hours=25))
        )
    # The worker's scheduled job does the purge.
    from azora_payments.jobs.registry import JobContext, get_kind, import_kind_modules

    import_kind_modules()
    context = JobContext(
        services=stripe_services,
        job_id=0,
        kind="idempotency.purge",
        attempt=1,
        max_attempts=3,
        scheduled_for=utcnow(),
        worker_id="test",
    )
    await get_kind("idempotency.purge").handler(context, {})
    async with stripe_services.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


async def test_stripe_refusing_the_request_fails_the_payment_for_good(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    """Stripe refuses the PaymentIntent as invalid (nothing charged): the payment fails, the
    answer is final and replayed, and nothing is retried at Stripe."""
    buyer = Buyer()
    headers = buyer.with_key()
    async with emulator_faulted(
        stripe_emulator, method="POST", path="^/v1/payment_intents$", status=400, times=1
    ):
        refused = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"][0]["field"] == "payment_method_id"
    assert "stripe" not in refused.text.lower()
    payment = (
        await api.get(f"/api/payments/{problem['payment_id']}", headers=buyer.headers)
    ).json()
    assert payment["status"] == "failed"
    assert payment["failure"]["message"] == problem["detail"]
    again = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert again.text == refused.text
    assert again.headers["idempotent-replayed"] == "true"
    assert await emulator_intents_for(stripe_emulator, buyer.id) == []
