"""`POST /api/webhooks/stripe`: signatures, livemode, duplicates, and a database that fails."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from sqlalchemy import func, select

from azora_payments.app import create_app
from azora_payments.config import Settings
from azora_payments.db.models import Job, Payment, WebhookEvent
from azora_payments.services import Services
from tests.conftest import (
    ASGI_DEFAULT_CLIENT,
    WEBHOOK_SECRET,
    asgi_client,
    make_settings,
    open_services,
    over_asgi,
)
from tests.webhooks.conftest import (
    WEBHOOK_PATH,
    event,
    event_row,
    intent_obj,
    reload,
    run_apply_jobs,
    seed_payment,
    send,
    sign,
)


async def _count(services: Services, model: type[WebhookEvent] | type[Job]) -> int:
    async with services.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_valid_signature_is_recorded_with_its_job(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    evt = event("payment_intent.succeeded", intent_obj("pi_ok", status="succeeded"))
    response = await send(hook_client, evt)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True}
    row = await event_row(hook_services, evt["id"])
    assert row is not None
    assert (row.status, row.type, row.source, row.object_id) == (
        "received",
        "payment_intent.succeeded",
        "webhook",
        "pi_ok",
    )
    assert row.payload == evt
    async with hook_services.db.transaction() as session:
        job = (await session.scalars(select(Job).where(Job.unique_key == evt["id"]))).one()
    assert job.kind == "stripe.event.apply"
    assert job.payload == {"event_id": evt["id"]}


async def test_second_secret_of_a_rotation_is_accepted(database_url: str) -> None:
    settings = make_settings(
        database_url, stripe_webhook_secret=f"whsec_old0123456789,{WEBHOOK_SECRET}"
    )
    async with (
        open_services(settings) as services,
        asgi_client(
            settings, services, client_addr=ASGI_DEFAULT_CLIENT, base_url="http://t"
        ) as http,
    ):
        assert settings.stripe_webhook_secret[1] == WEBHOOK_SECRET
        response = await send(http, event("charge.captured", {"id": "ch_1"}))
        assert response.status_code == 200


def _bad_deliveries() -> list[tuple[str, bytes, dict[str, str]]]:
    body = json.dumps(event("payment_intent.succeeded", {"id": "pi_x"})).encode()
    now = int(time.time())
    tampered = body.replace(b"pi_x", b"pi_y")
    return [
        ("wrong secret", body, {"Stripe-Signature": sign(body, secret="whsec_wrong")}),
        ("stale", body, {"Stripe-Signature": sign(body, timestamp=now - 301)}),
        ("missing header", body, {}),
        ("tampered body", tampered, {"Stripe-Signature": sign(body)}),
        ("garbage header", body, {"Stripe-Signature": "v1=deadbeef"}),
        ("signed non-json", b"nope", {"Stripe-Signature": sign(b"nope")}),
    ]


@pytest.mark.parametrize(
    ("body", "headers"),
    [pytest.param(b, h, id=name) for name, b, h in _bad_deliveries()],
)
async def test_bad_signature_is_400_and_nothing_is_stored(
    hook_client: httpx.AsyncClient,
    hook_services: Services,
    body: bytes,
    headers: dict[str, str],
) -> None:
    response = await hook_client.post(WEBHOOK_PATH, content=body, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "invalid_signature"
    assert "whsec" not in response.text
    assert await _count(hook_services, WebhookEvent) == 0
    assert await _count(hook_services, Job) == 0


async def test_livemode_mismatch_is_acknowledged_and_ignored(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    evt = event(
        "payment_intent.succeeded", intent_obj("pi_live", status="succeeded"), livemode=True
    )
    response = await send(hook_client, evt)
    assert response.status_code == 200
    assert response.json() == {"received": True}
    assert await _count(hook_services, WebhookEvent) == 0


async def test_duplicate_delivery_is_acknowledged_and_applied_once(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    payment = await seed_payment(hook_services, status="requires_action", pi_id="pi_dup")
    evt = event(
        "payment_intent.succeeded",
        intent_obj("pi_dup", status="succeeded", payment_id=payment.id, charge_id="ch_dup"),
    )
    for _ in range(3):
        assert (await send(hook_client, evt)).status_code == 200
    assert await _count(hook_services, WebhookEvent) == 1
    assert await _count(hook_services, Job) == 1
    assert await run_apply_jobs(hook_services) == 1
    # Stripe redelivers after we applied it: acknowledged, recorded once, not queued again.
    assert (await send(hook_client, evt)).status_code == 200
    assert await run_apply_jobs(hook_services) == 0
    stored: Payment = await reload(hook_services, Payment, payment.id)
    assert stored.status == "succeeded"
    row = await event_row(hook_services, evt["id"])
    assert row is not None
    assert row.status == "applied"
    assert row.attempts == 1


async def test_a_database_that_cannot_record_answers_500(hook_settings: Settings) -> None:
    from azora_payments.db.session import Database

    async with open_services(hook_settings) as services:
        app = create_app(hook_settings, services=services)
        # The engine is gone (disposed, and its URL now points nowhere): recording must fail.
        await services.db.dispose()
        services.db = Database("postgresql://nobody@127.0.0.1:9/none", pool_size=1)
        async with over_asgi(app, client_addr=ASGI_DEFAULT_CLIENT, base_url="http://t") as http:
            response = await send(http, event("payment_intent.succeeded", {"id": "pi_z"}))
        assert response.status_code == 500
        assert response.json()["code"] == "internal_error"
        assert "127.0.0.1" not in response.text
