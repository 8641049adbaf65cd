"""Applying events: each handled type changes the right fields, forward only, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from azora_payments.db.models import (
    AuditRecord,
    Job,
    Notification,
    Payment,
    PaymentMethod,
    Refund,
)
from azora_payments.db.types import utcnow
from azora_payments.domain import events as events_domain
from azora_payments.services import Services
from tests.webhooks.conftest import (
    charge_obj,
    dispute_obj,
    event,
    event_row,
    intent_obj,
    method_obj,
    refund_obj,
    reload,
    run_apply_jobs,
    seed_payment,
    send,
)


async def deliver(client: httpx.AsyncClient, services: Services, *evts: dict[str, Any]) -> None:
    for evt in evts:
        response = await send(client, evt)
        assert response.status_code == 200, response.text
    await run_apply_jobs(services)


async def payment_of(services: Services, payment_id: str) -> Payment:
    payment: Payment = await reload(services, Payment, payment_id)
    return payment


async def refunds_of(services: Services, payment_id: str) -> dict[str, Refund]:
    async with services.db.transaction() as session:
        rows = (await session.scalars(select(Refund).where(Refund.payment_id == payment_id))).all()
    return {r.stripe_refund_id or "": r for r in rows}


async def audit_of(services: Services, payment_id: str) -> list[tuple[str, str]]:
    async with services.db.transaction() as session:
        rows = (
            await session.scalars(
                select(AuditRecord)
                .where(AuditRecord.payment_id == payment_id)
                .order_by(AuditRecord.id)
            )
        ).all()
    return [(r.actor, r.action) for r in rows]


async def test_intent_events_move_status_forward_only(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    p = await seed_payment(hook_services, status="processing", pi_id="pi_fw")
    await deliver(
        hook_client,
        hook_services,
        event("payment_intent.requires_action", intent_obj("pi_fw", status="requires_action")),
    )
    # requires_action ranks below processing: a placeholder `processing` with a known intent
    # is not moved back.
    assert (await payment_of(hook_services, p.id)).status == "processing"
    await deliver(
        hook_client,
        hook_services,
        event(
            "payment_intent.succeeded",
            intent_obj("pi_fw", status="succeeded", charge_id="ch_fw"),
        ),
    )
    stored = await payment_of(hook_services, p.id)
    assert (stored.status, stored.stripe_charge_id) == ("succeeded", "ch_fw")
    # Late and replayed snapshots cannot move it back.
    await deliver(
        hook_client,
        hook_services,
        event("payment_intent.processing", intent_obj("pi_fw", status="processing")),
        event(
            "payment_intent.payment_failed",
            intent_obj("pi_fw", status="requires_payment_method", error_code="card_declined"),
        ),
        event("payment_intent.canceled", intent_obj("pi_fw", status="canceled")),
    )
    assert (await payment_of(hook_services, p.id)).status == "succeeded"
    assert ("stripe", "payment.succeeded") in await audit_of(hook_services, p.id)


@pytest.mark.parametrize(
    ("event_type", "status", "expected"),
    [
        ("payment_intent.payment_failed", "requires_payment_method", "failed"),
        ("payment_intent.canceled", "canceled", "canceled"),
        ("payment_intent.requires_action", "requires_action", "requires_action"),
    ],
)
async def test_each_intent_event_type(
    hook_client: httpx.AsyncClient,
    hook_services: Services,
    event_type: str,
    status: str,
    expected: str,
) -> None:
    p = await seed_payment(hook_services, status="requires_payment_method", pi_id=f"pi_{expected}")
    error = "card_declined" if expected == "failed" else None
    await deliver(
        hook_client,
        hook_services,
        event(event_type, intent_obj(f"pi_{expected}", status=status, error_code=error)),
    )
    stored = await payment_of(hook_services, p.id)
    assert stored.status == expected
    if expected == "failed":
        assert stored.failure_code == "card_declined"
    if expected == "requires_action":
        assert stored.client_secret == f"pi_{expected}_secret_x"


async def test_intent_found_by_metadata_before_we_stored_its_id(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    p = await seed_payment(hook_services, status="processing", pi_id=None)
    await deliver(
        hook_client,
        hook_services,
        event(
            "payment_intent.succeeded",
            intent_obj("pi_meta", status="succeeded", payment_id=p.id, charge_id="ch_meta"),
        ),
    )
    stored = await payment_of(hook_services, p.id)
    assert (stored.status, stored.stripe_payment_intent_id) == ("succeeded", "pi_meta")


async def test_objects_that_are_not_ours_are_ignored(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    strangers = [
        event("payment_intent.succeeded", intent_obj("pi_stranger", status="succeeded")),
        event(
            "refund.created",
            refund_obj("re_s", amount=1, status="succeeded", pi_id="pi_s", charge_id="ch_s"),
        ),
        event(
            "charge.dispute.created",
            dispute_obj("dp_s", status="needs_response", charge_id="ch_s", pi_id=None),
        ),
        event("payment_method.detached", method_obj("pm_stranger", customer=None)),
        event("customer.created", {"id": "cus_1", "object": "customer"}),
    ]
    await deliver(hook_client, hook_services, *strangers)
    for evt in strangers:
        row = await event_row(hook_services, evt["id"])
        assert row is not None
        assert row.status == "ignored", evt["type"]


async def test_refunds_come_from_stripe_amounts(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    p = await seed_payment(hook_services, status="succeeded", pi_id="pi_rf", charge_id="ch_rf")
    ours = Refund(
        id="rf_ours00000000000000000001",
        payment_id=p.id,
        amount=500,
        currency="usd",
        status="pending",
        reason="requested_by_customer",
        stripe_refund_id=None,
        created_by="ops_1",
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    async with hook_services.db.transaction() as session:
        session.add(ours)
    r1 = refund_obj(
        "re_1",
        amount=500,
        status="succeeded",
        pi_id="pi_rf",
        charge_id="ch_rf",
        azora_refund_id=ours.id,
    )
    r2 = refund_obj("re_2", amount=300, status="succeeded", pi_id="pi_rf", charge_id="ch_rf")
    await deliver(
        hook_client,
        hook_services,
        event("refund.created", r1),
        event("refund.created", r1),  # a second event for the same refund counts once
        event("charge.refunded", charge_obj("ch_rf", pi_id="pi_rf", refunds=[r2, r1])),
    )
    refunds = await refunds_of(hook_services, p.id)
    assert set(refunds) == {"re_1", "re_2"}
    assert refunds["re_1"].id == ours.id  # our own refund, completed, not doubled
    assert refunds["re_1"].status == "succeeded"
    assert refunds["re_2"].created_by == "stripe"  # made in Stripe's dashboard
    assert refunds["re_2"].id.startswith("rf_")
    assert (await payment_of(hook_services, p.id)).amount_refunded == 800

    # A refund that succeeds, then fails at the bank: it stops counting.
    r3 = refund_obj("re_3", amount=200, status="succeeded", pi_id="pi_rf", charge_id="ch_rf")
    await deliver(hook_client, hook_services, event("refund.created", r3))
    assert (await payment_of(hook_services, p.id)).amount_refunded == 1000
    failed = {**r3, "status": "failed", "failure_reason": "expired_or_canceled_card"}
    await deliver(
        hook_client,
        hook_services,
        event("refund.failed", failed),
        event("charge.refund.updated", failed),
        event("refund.updated", r3),  # a late "succeeded" snapshot cannot undo the failure
    )
    refunds = await refunds_of(hook_services, p.id)
    assert refunds["re_3"].status == "failed"
    assert refunds["re_3"].failure_reason == "expired_or_canceled_card"
    assert (await payment_of(hook_services, p.id)).amount_refunded == 800
    actions = await audit_of(hook_services, p.id)
    assert ("stripe", "refund.created") in actions
    assert ("stripe", "refund.failed") in actions


async def test_dispute_opened_and_closed(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    p = await seed_payment(hook_services, status="succeeded", pi_id="pi_dp", charge_id="ch_dp")
    await deliver(
        hook_client,
        hook_services,
        event(
            "charge.dispute.created",
            dispute_obj("dp_1", status="needs_response", charge_id="ch_dp", pi_id=None),
        ),
    )
    stored = await payment_of(hook_services, p.id)
    assert (stored.disputed, stored.dispute_status) == (True, "needs_response")
    await deliver(
        hook_client,
        hook_services,
        event(
            "charge.dispute.closed",
            dispute_obj("dp_1", status="won", charge_id="ch_dp", pi_id="pi_dp"),
        ),
    )
    await deliver(
        hook_client,
        hook_services,
        event(
            "charge.dispute.updated",  # late: cannot reopen it
            dispute_obj("dp_1", status="under_review", charge_id="ch_dp", pi_id="pi_dp"),
        ),
    )
    stored = await payment_of(hook_services, p.id)
    assert (stored.disputed, stored.dispute_status) == (True, "won")
    assert await audit_of(hook_services, p.id) == [
        ("stripe", "payment.disputed"),
        ("stripe", "payment.dispute_updated"),
    ]
    # The product's backend is told once, when the dispute opens.
    async with hook_services.db.read() as session:
        told = (await session.scalars(select(Notification.type))).all()
    assert told == ["payment.disputed"]


async def test_payment_method_events(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    before = utcnow() - timedelta(minutes=5)
    async with hook_services.db.transaction() as session:
        for pm_id in ("pm_upd", "pm_det"):
            session.add(
                PaymentMethod(
                    id=pm_id,
                    user_id="user_1",
                    stripe_customer_id="cus_1",
                    type="card",
                    brand="visa",
                    last4="4242",
                    exp_month=8,
                    exp_year=2029,
                    is_default=False,
                    created_at=before,
                    updated_at=before,
                )
            )
    await deliver(
        hook_client,
        hook_services,
        event("payment_method.attached", method_obj("pm_upd", customer="cus_1")),
        event("payment_method.updated", method_obj("pm_upd", customer="cus_1", exp_year=2031)),
        event("payment_method.detached", method_obj("pm_det", customer=None)),
    )
    updated: PaymentMethod = await reload(hook_services, PaymentMethod, "pm_upd")
    assert (updated.exp_month, updated.exp_year) == (8, 2031)
    assert await reload(hook_services, PaymentMethod, "pm_det") is None

    # A detach from before the card was saved again does not remove it.
    async with hook_services.db.transaction() as session:
        session.add(
            PaymentMethod(
                id="pm_det",
                user_id="user_1",
                stripe_customer_id="cus_1",
                type="card",
                brand="visa",
                last4="4242",
                exp_month=8,
                exp_year=2029,
                is_default=False,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    old = int((utcnow() - timedelta(minutes=1)).timestamp())
    await deliver(
        hook_client,
        hook_services,
        event("payment_method.detached", method_obj("pm_det", customer=None), created=old),
    )
    assert await reload(hook_services, PaymentMethod, "pm_det") is not None


async def test_a_failing_event_is_retried_then_parked(
    hook_client: httpx.AsyncClient, hook_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await seed_payment(hook_services, status="processing", pi_id="pi_park")
    evt = event("payment_intent.succeeded", intent_obj("pi_park", status="succeeded"))
    assert (await send(hook_client, evt)).status_code == 200

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the apply broke")

    monkeypatch.setattr(events_domain, "apply_event", broken)
    await run_apply_jobs(hook_services)
    row = await event_row(hook_services, evt["id"])
    assert row is not None
    assert (row.status, row.attempts) == ("received", 1)
    assert "the apply broke" in (row.last_error or "")
    # The last attempt: the job dies and the event is parked.
    async with hook_services.db.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.unique_key == evt["id"])
            .values(attempts=Job.max_attempts - 1, run_at=utcnow())
        )
    await run_apply_jobs(hook_services)
    row = await event_row(hook_services, evt["id"])
    assert row is not None
    assert row.status == "parked"
    async with hook_services.db.transaction() as session:
        job = (await session.scalars(select(Job).where(Job.unique_key == evt["id"]))).one()
    assert job.status == "dead"
    assert (await payment_of(hook_services, p.id)).status == "processing"
