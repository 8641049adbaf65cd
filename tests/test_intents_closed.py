"""PaymentIntents we will not complete are closed at Stripe (issue 9, items 10 and 11), against
the emulator, on SQLite and PostgreSQL: a failed payment's at once (declined) or from the queue
(failed later, by webhook), and an abandoned 3-D Secure one's after
`REQUIRES_ACTION_EXPIRES_HOURS`. No `client_secret` can then complete or retry them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from azora_payments.db.models import AuditRecord, Notification, Payment
from azora_payments.db.types import utcnow
from azora_payments.domain import events
from azora_payments.domain.outcomes import CLOSE_INTENT
from azora_payments.jobs.registry import JobContext, get_kind, import_kind_modules
from azora_payments.jobs.worker import Worker, WorkerOptions
from azora_payments.services import Services
from tests.conftest import STRIPE_KEY
from tests.test_payments import PROCESS, Buyer, payment_body

EXPIRE = "payments.expire_requires_action"


async def at_stripe(base: str, method: str, path: str, **data: str) -> httpx.Response:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        if method == "GET":
            return await http.get(f"{base}{path}", params=data)
        return await http.post(f"{base}{path}", data=data)


async def intent(base: str, intent_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (
        await at_stripe(base, "GET", f"/v1/payment_intents/{intent_id}")
    ).json()
    return found


async def deliver_events_of(services: Services, base: str, object_id: str) -> int:
    """Stripe's events about one object so far, recorded and applied as webhooks are."""
    listed = (await at_stripe(base, "GET", "/v1/events", limit="100")).json()["data"]
    mine = [e for e in reversed(listed) if e["data"]["object"].get("id") == object_id]
    for evt in mine:
        async with services.db.transaction() as session:
            await events.record_event(session, evt, source="webhook")
        await events.apply_recorded(services.db, evt["id"])
    return len(mine)


async def run_jobs(services: Services, kind: str) -> int:
    import_kind_modules()
    options = WorkerOptions(once=True, poll_seconds=0.02, concurrency=1)
    worker = Worker(services, options=options, kinds={kind: get_kind(kind)})
    await worker.run()
    return worker.runs


async def payment_row(services: Services, payment_id: str) -> Payment:
    async with services.db.read() as session:
        row = await session.get(Payment, payment_id)
    assert row is not None
    return row


async def told(services: Services, payment_id: str) -> list[str]:
    async with services.db.read() as session:
        found = await session.scalars(
            select(Notification.type).where(Notification.payment_id == payment_id)
        )
        return list(found)


async def audited(services: Services, payment_id: str) -> list[str]:
    async with services.db.read() as session:
        found = await session.scalars(
            select(AuditRecord.action).where(AuditRecord.payment_id == payment_id)
        )
        return list(found)


async def test_a_declined_payments_intent_is_canceled_at_once(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """Item 11: after the 402 nobody can confirm the intent again with another card."""
    buyer = Buyer()
    declined = await api.post(
        PROCESS,
        json=payment_body(payment_method_id="pm_card_chargeDeclined"),
        headers=buyer.with_key(),
    )
    assert declined.status_code == 402, declined.text
    payment = await payment_row(stripe_services, declined.json()["payment_id"])
    assert payment.stripe_payment_intent_id is not None
    closed = await intent(stripe_emulator, payment.stripe_payment_intent_id)
    assert (closed["status"], closed["cancellation_reason"]) == ("canceled", "abandoned")

    retried = await at_stripe(
        stripe_emulator,
        "POST",
        f"/v1/payment_intents/{payment.stripe_payment_intent_id}/confirm",
        payment_method="pm_card_visa",
    )
    assert retried.status_code == 400
    assert retried.json()["error"]["code"] == "payment_intent_unexpected_state"
    assert (await intent(stripe_emulator, payment.stripe_payment_intent_id))["status"] == "canceled"
    assert (await payment_row(stripe_services, payment.id)).status == "failed"


async def test_a_payment_failed_by_webhook_has_its_intent_closed_by_the_queue(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """Item 11: 3-D Secure failed (told by webhook): the queued job cancels the intent, so the
    `client_secret` the front end holds cannot try other cards on it."""
    buyer = Buyer()
    waiting = await api.post(
        PROCESS,
        json=payment_body(payment_method_id="pm_card_threeDSecure2Required"),
        headers=buyer.with_key(),
    )
    assert waiting.status_code == 201, waiting.text
    payment = waiting.json()
    intent_id, secret = payment["stripe_payment_intent_id"], payment["client_secret"]
    failed = await at_stripe(
        stripe_emulator,
        "POST",
        f"/v1/payment_intents/{intent_id}/_authenticate",
        client_secret=secret,
        success="false",
    )
    assert failed.status_code == 200, failed.text
    assert await deliver_events_of(stripe_services, stripe_emulator, intent_id) >= 1
    assert (await payment_row(stripe_services, payment["id"])).status == "failed"
    assert (await intent(stripe_emulator, intent_id))["status"] == "requires_payment_method"

    assert await run_jobs(stripe_services, CLOSE_INTENT) == 1
    assert (await intent(stripe_emulator, intent_id))["status"] == "canceled"
    retried = await at_stripe(
        stripe_emulator,
        "POST",
        f"/v1/payment_intents/{intent_id}/confirm",
        payment_method="pm_card_visa",
    )
    assert retried.status_code == 400
    assert (await payment_row(stripe_services, payment["id"])).status == "failed"


async def expire(services: Services) -> None:
    import_kind_modules()
    context = JobContext(
        services=services,
        job_id=0,
        kind=EXPIRE,
        attempt=1,
        max_attempts=3,
        scheduled_for=utcnow(),
        worker_id="test",
    )
    await get_kind(EXPIRE).handler(context, {})


async def test_abandoned_three_d_secure_is_canceled_after_the_setting(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """Item 10: left in requires_action past REQUIRES_ACTION_EXPIRES_HOURS (24): canceled at
    Stripe by the scheduled job, `payment.canceled`, and the customer can no longer pay it."""
    assert stripe_services.settings.requires_action_expires_hours == 24
    buyer = Buyer()
    body = payment_body(payment_method_id="pm_card_threeDSecure2Required")
    abandoned = (await api.post(PROCESS, json=body, headers=buyer.with_key())).json()
    fresh = (await api.post(PROCESS, json=body, headers=buyer.with_key())).json()
    assert abandoned["status"] == fresh["status"] == "requires_action"
    async with stripe_services.db.transaction() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id == abandoned["id"])
            .values(updated_at=utcnow() - timedelta(hours=24, minutes=1))
        )

    await expire(stripe_services)

    canceled = await payment_row(stripe_services, abandoned["id"])
    assert (canceled.status, canceled.client_secret) == ("canceled", None)
    closed = await intent(stripe_emulator, abandoned["stripe_payment_intent_id"])
    assert (closed["status"], closed["cancellation_reason"]) == ("canceled", "abandoned")
    assert "payment.canceled" in await told(stripe_services, abandoned["id"])
    assert "payment.canceled" in await audited(stripe_services, abandoned["id"])
    # The customer comes back to finish 3-D Secure: Stripe refuses, nothing is charged.
    late = await at_stripe(
        stripe_emulator,
        "POST",
        f"/v1/payment_intents/{abandoned['stripe_payment_intent_id']}/_authenticate",
        client_secret=abandoned["client_secret"],
        success="true",
    )
    assert late.status_code == 400
    assert (await intent(stripe_emulator, abandoned["stripe_payment_intent_id"]))[
        "status"
    ] == "canceled"
    # Not yet abandoned: left alone.
    assert (await payment_row(stripe_services, fresh["id"])).status == "requires_action"
    assert (await intent(stripe_emulator, fresh["stripe_payment_intent_id"]))[
        "status"
    ] == "requires_action"
    seen = (await api.get(f"/api/payments/{abandoned['id']}", headers=buyer.headers)).json()
    assert (seen["status"], seen["client_secret"]) == ("canceled", None)


async def test_stripe_down_when_closing_leaves_it_to_the_queue(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """The 402 does not wait on Stripe being up: the job queued with the failure closes it."""
    from tests.conftest import emulator_clear_faults, emulator_faults

    await emulator_faults(
        stripe_emulator,
        method="POST",
        path="^/v1/payment_intents/[^/]+/cancel$",
        status=503,
        times=2,
    )
    try:
        declined = await api.post(
            PROCESS,
            json=payment_body(payment_method_id="pm_card_chargeDeclined"),
            headers=Buyer().with_key(),
        )
    finally:
        await emulator_clear_faults(stripe_emulator)
    assert declined.status_code == 402, declined.text
    payment = await payment_row(stripe_services, declined.json()["payment_id"])
    assert payment.stripe_payment_intent_id is not None
    still_open = await intent(stripe_emulator, payment.stripe_payment_intent_id)
    assert still_open["status"] == "requires_payment_method"
    assert await run_jobs(stripe_services, CLOSE_INTENT) == 1
    assert (await intent(stripe_emulator, payment.stripe_payment_intent_id))["status"] == "canceled"


async def test_expiry_skips_what_stripe_will_not_cancel_now(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """Stripe down, or the intent moved on just before the cancel: the payment is left as
    Stripe has it, and the next run tries again."""
    from tests.conftest import emulator_clear_faults, emulator_faults

    buyer = Buyer()
    body = payment_body(payment_method_id="pm_card_threeDSecure2Required")
    waiting = (await api.post(PROCESS, json=body, headers=buyer.with_key())).json()
    async with stripe_services.db.transaction() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id == waiting["id"])
            .values(updated_at=utcnow() - timedelta(hours=30))
        )
    cancel = "^/v1/payment_intents/[^/]+/cancel$"
    for refusal in (
        {"status": 503, "times": 2},
        {"status": 400, "code": "payment_intent_unexpected_state"},
    ):
        await emulator_faults(stripe_emulator, method="POST", path=cancel, **refusal)
        try:
            await expire(stripe_services)
        finally:
            await emulator_clear_faults(stripe_emulator)
        assert (await payment_row(stripe_services, waiting["id"])).status == "requires_action"
    await expire(stripe_services)
    assert (await payment_row(stripe_services, waiting["id"])).status == "canceled"
