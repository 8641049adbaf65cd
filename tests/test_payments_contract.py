"""Issue 9, items 5, 6 and 9: idempotency keys forgotten at their TTL, metadata that always
fits Stripe's 50 keys, and a client_secret kept only while it is needed. On both databases."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from azora_payments.db.models import IdempotencyKey, Notification, Payment
from azora_payments.db.types import utcnow
from azora_payments.domain import audit
from azora_payments.domain.payments import apply_intent
from azora_payments.services import Services
from azora_payments.stripe_gateway import intent_from_object
from tests.conftest import emulator_intents_for
from tests.test_notifications import (  # noqa: F401  (fixtures)
    Backend,
    backend,
    deliver_due,
    notify_api,
    notify_services,
    notify_settings,
)
from tests.test_payments import PROCESS, Buyer, payment_body

# ------------------------------------------------------------------ item 5: TTL checked at read


async def _age_keys(services: Services, hours: float) -> None:
    async with services.db.transaction() as session:
        await session.execute(
            update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=hours))
        )


async def test_a_key_older_than_its_ttl_is_never_replayed(
    api: httpx.AsyncClient, stripe_services: Services, stripe_emulator: str
) -> None:
    buyer = Buyer()
    headers = buyer.with_key()
    first = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert first.status_code == 201, first.text
    # Not yet purged, only old: the key is forgotten all the same.
    await _age_keys(stripe_services, 24.5)
    again = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    # And, being new, the key now replays its own answer (and another body is a reuse).
    replay = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.text == again.text
    reused = await api.post(PROCESS, json=payment_body(amount=999), headers=headers)
    assert reused.status_code == 422
    # An old key is new whatever its body was.
    await _age_keys(stripe_services, 25)
    other = await api.post(PROCESS, json=payment_body(amount=999), headers=headers)
    assert other.status_code == 201, other.text
    assert len(await emulator_intents_for(stripe_emulator, buyer.id)) == 3


async def test_a_key_within_its_ttl_still_replays(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    headers = Buyer().with_key()
    first = await api.post(PROCESS, json=payment_body(), headers=headers)
    await _age_keys(stripe_services, 23.5)
    replay = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.text == first.text


async def test_redis_never_replays_a_forgotten_key(
    api: httpx.AsyncClient, stripe_services: Services, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    from azora_payments.domain.idempotency import _redis_key

    stripe_services.idempotency.redis = aioredis.from_url(redis_url)
    try:
        buyer = Buyer()
        headers = buyer.with_key()
        first = await api.post(PROCESS, json=payment_body(), headers=headers)
        redis_key = _redis_key(buyer.id, headers["Idempotency-Key"])
        cached = json.loads(await stripe_services.idempotency.redis.get(redis_key))
        cached["created"] -= 25 * 3600
        await stripe_services.idempotency.redis.set(redis_key, json.dumps(cached), ex=60)
        await _age_keys(stripe_services, 25)
        again = await api.post(PROCESS, json=payment_body(), headers=headers)
        assert again.status_code == 201
        assert "idempotent-replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]
    finally:
        await stripe_services.idempotency.redis.aclose()


# ------------------------------------------------------------------ item 6: metadata


async def test_48_caller_keys_fit_beside_ours(api: httpx.AsyncClient, stripe_emulator: str) -> None:
    buyer = Buyer()
    metadata = {f"k{i}": "v" for i in range(48)}
    paid = await api.post(PROCESS, json=payment_body(metadata=metadata), headers=buyer.with_key())
    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "succeeded"
    [intent] = await emulator_intents_for(stripe_emulator, buyer.id)
    assert len(intent["metadata"]) == 50
    assert intent["metadata"]["azora_payment_id"] == paid.json()["id"]


async def test_more_than_48_keys_is_422_before_anything(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    buyer = Buyer()
    metadata = {f"k{i}": "v" for i in range(49)}
    refused = await api.post(
        PROCESS, json=payment_body(metadata=metadata), headers=buyer.with_key()
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "validation_error"
    assert [e["field"] for e in refused.json()["errors"]] == ["metadata"]
    assert "payment_id" not in refused.json()
    assert await emulator_intents_for(stripe_emulator, buyer.id) == []


async def test_azora_keys_are_reserved(api: httpx.AsyncClient, stripe_emulator: str) -> None:
    buyer = Buyer()
    for metadata in ({"azora_payment_id": "pay_forged"}, {"order": "1", "azora_x": "y"}):
        refused = await api.post(
            PROCESS, json=payment_body(metadata=metadata), headers=buyer.with_key()
        )
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert problem["code"] == "validation_error"
        [error] = problem["errors"]
        assert error["field"] == "metadata." + next(k for k in metadata if k.startswith("azora_"))
    assert await emulator_intents_for(stripe_emulator, buyer.id) == []


# ------------------------------------------------------------------ item 9: client_secret


async def test_notifications_never_carry_the_client_secret(
    notify_api: httpx.AsyncClient,  # noqa: F811
    notify_services: Services,  # noqa: F811
    backend: Backend,  # noqa: F811
) -> None:
    buyer = Buyer()
    response = await notify_api.post(
        PROCESS,
        json=payment_body(payment_method_id="pm_card_threeDSecure2Required"),
        headers=buyer.with_key(),
    )
    assert response.status_code == 201, response.text
    payment = response.json()
    assert payment["status"] == "requires_action"
    secret = payment["client_secret"]
    assert secret  # the contract returns it here, to the customer's front end
    async with notify_services.db.read() as session:
        rows = list(await session.scalars(select(Notification)))
    assert [r.type for r in rows] == ["payment.requires_action"]
    assert secret not in json.dumps(rows[0].data)
    assert rows[0].data["client_secret"] is None
    await deliver_due(notify_services)
    [told] = backend.events()
    assert told["type"] == "payment.requires_action"
    assert secret not in json.dumps(told)
    listed = await notify_api.get("/api/notifications", headers=_operator_headers())
    assert listed.status_code == 200
    assert secret not in listed.text


async def test_client_secret_is_cleared_when_the_payment_leaves_requires_action(
    api: httpx.AsyncClient, stripe_services: Services, stripe_emulator: str
) -> None:
    buyer = Buyer()
    payment = (
        await api.post(
            PROCESS,
            json=payment_body(payment_method_id="pm_card_threeDSecure2Required"),
            headers=buyer.with_key(),
        )
    ).json()
    intent = await _authenticate(stripe_emulator, payment["client_secret"], payment)
    async with stripe_services.db.transaction() as session:
        row = await session.get(Payment, payment["id"])
        assert row is not None
        assert row.client_secret == payment["client_secret"]
        await apply_intent(session, row, intent_from_object(intent), actor=audit.STRIPE)
    async with stripe_services.db.read() as session:
        row = await session.get(Payment, payment["id"])
        assert row is not None
        assert (row.status, row.client_secret) == ("succeeded", None)


def _operator_headers() -> dict[str, str]:
    from tests.conftest import bearer, make_token

    return bearer(make_token("ops_1", roles=["admin"]))


async def _authenticate(
    emulator: str, client_secret: str, payment: dict[str, object]
) -> dict[str, object]:
    from tests.conftest import STRIPE_KEY

    intent_id = payment["stripe_payment_intent_id"]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        done = await http.post(
            f"{emulator}/v1/payment_intents/{intent_id}/_authenticate",
            data={"client_secret": client_secret, "success": "true"},
        )
        assert done.status_code == 200, done.text
        intent: dict[str, object] = done.json()
        return intent
