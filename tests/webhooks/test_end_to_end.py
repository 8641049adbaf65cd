"""With the emulator: its real webhook delivery into a real server process, reconciliation after
downtime, and the `reconcile` / `events list|replay` commands."""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from azora_payments.config import Settings
from azora_payments.db.models import Job, Payment, WebhookEvent
from azora_payments.db.types import utcnow
from azora_payments.devstack.emulator import configure_webhook
from azora_payments.devstack.processes import run_command, start_server
from azora_payments.domain import reconcile
from azora_payments.jobs.events import replay_command
from azora_payments.services import Services
from tests.conftest import (
    STRIPE_KEY,
    WEBHOOK_SECRET,
    bearer,
    emulator_settings,
    free_port,
    make_token,
    server_env,
    stack_fixtures,
    unique_user,
)
from tests.webhooks.conftest import (
    event,
    event_row,
    intent_obj,
    reload,
    run_apply_jobs,
    seed_payment,
    send,
)

ROOT = Path(__file__).resolve().parents[2]
THREE_D_SECURE_CARD = "4000002760003184"


@pytest.fixture
def e2e_settings(database_url: str, tmp_path: Path, own_emulator: str) -> Settings:
    return emulator_settings(database_url, tmp_path, own_emulator, reconcile_after_seconds=1)


e2e_services, e2e_api = stack_fixtures(
    "e2e_settings", services="e2e_services", client="e2e_api", client_addr=("203.0.113.20", 4321)
)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_command(args, server_env(settings))


@pytest.fixture
def server(e2e_settings: Settings, tmp_path: Path) -> Iterator[str]:
    env = server_env(e2e_settings, RATE_LIMIT_IP="100000/minute")
    with start_server(env, tmp_path / "server.log") as process:
        yield process.url


async def stripe_post(base: str, path: str, data: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        response = await http.post(f"{base}{path}", data=data)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def card(base: str, number: str) -> str:
    pm = await stripe_post(
        base,
        "/v1/payment_methods",
        {
            "type": "card",
            "card[number]": number,
            "card[exp_month]": "12",
            "card[exp_year]": "2030",
            "card[cvc]": "123",
        },
    )
    return str(pm["id"])


async def pay(
    http: httpx.AsyncClient, headers: dict[str, str], payment_method_id: str, amount: int = 2000
) -> dict[str, Any]:
    response = await http.post(
        "/api/payments/process",
        json={"amount": amount, "currency": "usd", "payment_method_id": payment_method_id},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_event(
    services: Services, event_type: str, object_id: str, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with services.db.transaction() as session:
            found = await session.scalar(
                select(WebhookEvent.id).where(
                    WebhookEvent.type == event_type, WebhookEvent.object_id == object_id
                )
            )
        if found:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{event_type} for {object_id} never arrived")


async def test_three_d_secure_settled_by_the_emulators_webhook(
    server: str, own_emulator: str, e2e_services: Services
) -> None:
    configure_webhook(own_emulator, url=f"{server}/api/webhooks/stripe", secret=WEBHOOK_SECRET)
    headers = bearer(make_token(unique_user()))
    async with httpx.AsyncClient(base_url=server, timeout=20) as http:
        payment = await pay(http, headers, await card(own_emulator, THREE_D_SECURE_CARD))
        assert payment["status"] == "requires_action"
        intent_id = payment["stripe_payment_intent_id"]
        await stripe_post(
            own_emulator,
            f"/v1/payment_intents/{intent_id}/_authenticate",
            {"client_secret": payment["client_secret"], "success": "true"},
        )
        await wait_for_event(e2e_services, "payment_intent.succeeded", intent_id)
        assert await run_apply_jobs(e2e_services) >= 1
        settled = (await http.get(f"/api/payments/{payment['id']}", headers=headers)).json()
    assert settled["status"] == "succeeded"
    assert settled["client_secret"] is None


async def test_reconcile_after_downtime(
    e2e_api: httpx.AsyncClient, e2e_settings: Settings, e2e_services: Services, own_emulator: str
) -> None:
    # The service is down: Stripe's deliveries find nobody.
    configure_webhook(
        own_emulator, url=f"http://127.0.0.1:{free_port()}/gone", secret=WEBHOOK_SECRET
    )
    buyer = bearer(make_token(unique_user()))
    three_ds = await pay(e2e_api, buyer, await card(own_emulator, THREE_D_SECURE_CARD))
    paid = await pay(e2e_api, buyer, "pm_card_visa", amount=3000)
    assert (three_ds["status"], paid["status"]) == ("requires_action", "succeeded")
    # What the service knew before it went down.
    assert not (await reconcile.reconcile(e2e_services)).errors

    # While it is down: 3-D Secure completed, a refund made in Stripe's dashboard, and a
    # payment whose PaymentIntent answer never reached us.
    await stripe_post(
        own_emulator,
        f"/v1/payment_intents/{three_ds['stripe_payment_intent_id']}/_authenticate",
        {"client_secret": three_ds["client_secret"], "success": "true"},
    )
    await stripe_post(
        own_emulator,
        "/v1/refunds",
        {"payment_intent": paid["stripe_payment_intent_id"], "amount": "1200"},
    )
    lost = await seed_payment(e2e_services, status="processing", pi_id=None)
    intent = await e2e_services.stripe.retrieve_payment_intent(paid["stripe_payment_intent_id"])
    customer_id = intent.customer
    unanswered = await seed_payment(
        e2e_services, status="processing", pi_id=None, stripe_customer_id=customer_id
    )
    await e2e_services.stripe.create_payment_intent(
        payment_id=unanswered.id,
        user_id=unanswered.user_id,
        amount=2000,
        currency="usd",
        customer_id=customer_id or "",
        payment_method_id=(await card(own_emulator, "4242424242424242")),
        description=None,
        metadata={},
        save_payment_method=False,
    )
    # Both were started long enough ago for reconciliation to settle them.
    async with e2e_services.db.transaction() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id.in_([lost.id, unanswered.id]))
            .values(
                updated_at=utcnow() - timedelta(hours=1),
                created_at=utcnow() - timedelta(minutes=2),
            )
        )

    # The service is back, and a webhook arrives before the pass: a later event must not hide
    # the ones missed during the downtime (the catch-up starts from its own stored cursor).
    later = event(
        "customer.created",
        {"id": "cus_later", "object": "customer"},
        created=int(time.time()) + 900,
    )
    assert (await send(e2e_api, later)).status_code == 200

    # One reconciliation pass.
    result = cli(e2e_settings, "reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "requires_action -> succeeded" in result.stdout
    assert f"{lost.id}: processing -> failed" in result.stdout

    admin = bearer(make_token("ops_1", roles=["admin"]))
    a = (await e2e_api.get(f"/api/payments/{three_ds['id']}", headers=buyer)).json()
    b = (await e2e_api.get(f"/api/payments/{paid['id']}", headers=admin)).json()
    c = (await e2e_api.get(f"/api/payments/{lost.id}", headers=admin)).json()
    d = (await e2e_api.get(f"/api/payments/{unanswered.id}", headers=admin)).json()
    assert a["status"] == "succeeded"
    assert b["amount_refunded"] == 1200
    assert [(r["amount"], r["status"]) for r in b["refunds"]] == [(1200, "succeeded")]
    assert b["refunds"][0]["id"].startswith("rf_")
    assert ("stripe", "refund.created") in [(x["actor"], x["action"]) for x in b["audit"]]
    assert (c["status"], c["failure"]["code"]) == ("failed", "stripe_unreachable")
    assert (d["status"], d["stripe_payment_intent_id"] is not None) == ("succeeded", True)

    # A second pass finds nothing more to do.
    again = await reconcile.reconcile(e2e_services)
    assert (again.changes, again.errors) == ([], [])


async def test_events_list_and_replay(
    e2e_api: httpx.AsyncClient, e2e_settings: Settings, e2e_services: Services
) -> None:
    payment = await seed_payment(e2e_services, status="processing", pi_id="pi_replay")
    evt = event("payment_intent.succeeded", intent_obj("pi_replay", status="succeeded"))
    assert (await send(e2e_api, evt)).status_code == 200
    # As the queue leaves it after the last failed attempt.
    async with e2e_services.db.transaction() as session:
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == evt["id"])
            .values(status="parked", last_error="RuntimeError: boom")
        )
        await session.execute(
            update(Job).where(Job.unique_key == evt["id"]).values(status="dead", attempts=15)
        )

    listed = cli(e2e_settings, "events", "list", "--status", "parked")
    assert listed.returncode == 0, listed.stderr
    assert evt["id"] in listed.stdout
    assert "RuntimeError: boom" in listed.stdout

    replayed = cli(e2e_settings, "events", "replay", "--all-parked")
    assert replayed.returncode == 0, replayed.stderr
    assert f"event {evt['id']}: queued" in replayed.stdout
    await run_apply_jobs(e2e_services)
    stored: Payment = await reload(e2e_services, Payment, payment.id)
    assert stored.status == "succeeded"
    row = await event_row(e2e_services, evt["id"])
    assert row is not None
    assert row.status == "applied"

    # Replaying an applied event changes nothing; an unknown one is an error.
    updated_at = stored.updated_at
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        replay_command,
        e2e_settings,
        event_ids=[evt["id"], "evt_unknown"],
        all_parked=False,
        out=out,
        err=err,
    )
    assert code == 1
    assert "evt_unknown is not recorded" in err.getvalue()
    assert await run_apply_jobs(e2e_services) == 1
    stored = await reload(e2e_services, Payment, payment.id)
    assert stored.updated_at == updated_at


async def test_unsettled_payment_is_reread_once_per_threshold(
    e2e_api: httpx.AsyncClient, e2e_services: Services, own_emulator: str
) -> None:
    """A 3-D Secure never completed stays unsettled: re-read once, then left alone for a
    threshold, so it cannot crowd the others out of every pass."""
    buyer = bearer(make_token(unique_user()))
    waiting = await pay(e2e_api, buyer, await card(own_emulator, THREE_D_SECURE_CARD))
    assert waiting["status"] == "requires_action"
    async with e2e_services.db.transaction() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id == waiting["id"])
            .values(updated_at=utcnow() - timedelta(hours=1))
        )
    before = (await e2e_api.get(f"/api/payments/{waiting['id']}", headers=buyer)).json()
    now = utcnow()
    first = await reconcile.reconcile(e2e_services, now=now)
    second = await reconcile.reconcile(e2e_services, now=now)
    later = await reconcile.reconcile(e2e_services, now=now + timedelta(hours=1))
    assert (first.payments_checked, second.payments_checked, later.payments_checked) == (1, 0, 1)
    after = (await e2e_api.get(f"/api/payments/{waiting['id']}", headers=buyer)).json()
    assert after == before  # re-reading changed nothing users see, updated_at included
