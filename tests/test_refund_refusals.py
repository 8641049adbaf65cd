"""Refunds Stripe refuses, and refunds whose answer was lost and never retried (issue 9, item 2),
against the emulator, on SQLite and PostgreSQL.

Every refusal fails the refund (it stops counting against what remains) and is the key's final
answer, `409` with Stripe's code; reconciliation finishes a refund left without an answer in one
of three ways: sent again with the same Stripe key while it lives, else looked up, else failed
and told (audit record, `refund.failed` notification).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from azora_payments.db.models import AuditRecord, IdempotencyKey, Notification, Refund
from azora_payments.db.types import utcnow
from azora_payments.domain import reconcile
from azora_payments.services import Services
from tests.conftest import emulator_clear_faults, emulator_count, emulator_faults
from tests.test_refunds import REFUND, operator, paid, stripe_refunds

CREATE_REFUND = "POST /v1/refunds"


async def notifications_of(services: Services, payment_id: str) -> list[Notification]:
    async with services.db.read() as session:
        found = await session.scalars(
            select(Notification).where(Notification.payment_id == payment_id)
        )
        return list(found)


async def audit_of(services: Services, payment_id: str) -> list[AuditRecord]:
    async with services.db.read() as session:
        found = await session.scalars(
            select(AuditRecord).where(AuditRecord.payment_id == payment_id)
        )
        return list(found)


@pytest.mark.parametrize(
    "code",
    ["balance_insufficient", "charge_expired_for_refund", "refund_disputed_payment", None],
)
async def test_every_refusal_fails_the_refund_and_is_replayed(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services, code: str | None
) -> None:
    payment = await paid(api)
    headers = operator()
    body = {"payment_id": payment["id"], "amount": 500}
    fault: dict[str, Any] = {"method": "POST", "path": "^/v1/refunds$", "status": 400}
    if code is not None:
        fault["code"] = code
    await emulator_faults(stripe_emulator, **fault)
    try:
        refused = await api.post(REFUND, json=body, headers=headers)
    finally:
        await emulator_clear_faults(stripe_emulator)
    expected = code or "injected_fault"
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert (problem["code"], problem["retryable"]) == (expected, False)
    assert problem["payment_id"] == payment["id"]
    assert "stripe" not in problem["detail"].lower() or "stripe" in problem["title"].lower()

    before = await emulator_count(stripe_emulator, CREATE_REFUND)
    again = await api.post(REFUND, json=body, headers=headers)
    assert again.text == refused.text
    assert again.headers["idempotent-replayed"] == "true"
    assert await emulator_count(stripe_emulator, CREATE_REFUND) == before

    after = (await api.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    assert [r["status"] for r in after["refunds"]] == ["failed"]
    assert after["amount_refunded"] == 0
    # It no longer counts: the whole amount can still be refunded.
    whole = await api.post(REFUND, json={"payment_id": payment["id"]}, headers=operator())
    assert (whole.status_code, whole.json()["amount"]) == (201, 2000)
    kinds = [n.type for n in await notifications_of(stripe_services, payment["id"])]
    assert "refund.failed" in kinds


async def lose_refund_answer(
    api: httpx.AsyncClient, stripe_emulator: str, payment: dict[str, Any], *, charged: bool
) -> str:
    """A refund whose every answer from Stripe is lost (`charged`: Stripe made it anyway, else
    Stripe never got it); nobody retries. Its id."""
    await emulator_faults(
        stripe_emulator, method="POST", path="^/v1/refunds$", status=500, times=2, after=charged
    )
    try:
        lost = await api.post(
            REFUND, json={"payment_id": payment["id"], "amount": 300}, headers=operator()
        )
    finally:
        await emulator_clear_faults(stripe_emulator)
    assert lost.status_code == 503, lost.text
    after = (await api.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    (refund,) = after["refunds"]
    assert (refund["status"], refund["stripe_refund_id"]) == ("pending", None)
    return str(refund["id"])


async def age_refund(services: Services, refund_id: str, *, by: timedelta) -> None:
    async with services.db.transaction() as session:
        await session.execute(
            update(Refund)
            .where(Refund.id == refund_id)
            .values(created_at=utcnow() - by, updated_at=utcnow() - by)
        )
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.refund_id == refund_id)
            .values(locked_at=None)
        )


async def settle_unanswered(services: Services) -> reconcile.Report:
    """Reconciliation's refund step alone (a full pass would first catch up the emulator's
    events, which may settle the refund by its `refund.created` before this step runs)."""
    report = reconcile.Report()
    await reconcile.settle_unanswered_refunds(
        services,
        report=report,
        older_than=utcnow() - timedelta(seconds=services.settings.reconcile_after_seconds),
        now=utcnow(),
    )
    return report


async def refund_row(services: Services, refund_id: str) -> Refund:
    async with services.db.read() as session:
        row = await session.get(Refund, refund_id)
    assert row is not None
    return row


async def lost_then_settled(
    api: httpx.AsyncClient,
    services: Services,
    stripe_emulator: str,
    *,
    charged: bool,
    aged: timedelta,
) -> tuple[dict[str, Any], str, Refund, int]:
    """A paid payment's refund whose answer was lost (after Stripe made it, if `charged`),
    aged by `aged`, then reconciliation's refund step: the payment, the refund's id, the refund
    after the step, and how many refunds the step sent to Stripe."""
    payment = await paid(api)
    refund_id = await lose_refund_answer(api, stripe_emulator, payment, charged=charged)
    await age_refund(services, refund_id, by=aged)
    before = await emulator_count(stripe_emulator, CREATE_REFUND)
    report = await settle_unanswered(services)
    assert not report.errors, report.lines()
    sent = await emulator_count(stripe_emulator, CREATE_REFUND) - before
    return payment, refund_id, await refund_row(services, refund_id), sent


async def test_unanswered_refund_is_sent_again_with_the_same_stripe_key(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    payment, refund_id, row, sent = await lost_then_settled(
        api, stripe_services, stripe_emulator, charged=True, aged=timedelta(hours=1)
    )
    assert sent == 1
    assert row.status == "succeeded"
    at_stripe = await stripe_refunds(stripe_emulator, payment["stripe_payment_intent_id"])
    # Sent again with the same Stripe key: Stripe's first refund, not a second one.
    assert [(r["id"], r["amount"]) for r in at_stripe] == [(row.stripe_refund_id, 300)]
    # The request's key now answers what the refund became.
    replay = await api.post(
        REFUND,
        json={"payment_id": payment["id"], "amount": 300},
        headers=operator(await key_of(stripe_services, refund_id)),
    )
    assert replay.status_code == 201
    assert replay.json()["stripe_refund_id"] == row.stripe_refund_id
    assert replay.headers["idempotent-replayed"] == "true"


async def key_of(services: Services, refund_id: str) -> str:
    async with services.db.read() as session:
        key = await session.scalar(
            select(IdempotencyKey.key).where(IdempotencyKey.refund_id == refund_id)
        )
    assert key is not None
    return str(key)


async def test_unanswered_refund_past_stripes_key_lifetime_is_looked_up(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    payment, _, row, sent = await lost_then_settled(
        api, stripe_services, stripe_emulator, charged=True, aged=timedelta(hours=25)
    )
    assert sent == 0  # never sent again
    assert row.status == "succeeded"
    assert row.stripe_refund_id is not None
    at_stripe = await stripe_refunds(stripe_emulator, payment["stripe_payment_intent_id"])
    assert [r["id"] for r in at_stripe] == [row.stripe_refund_id]


async def test_unanswered_refund_stripe_never_got_is_failed_and_told(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    payment, refund_id, row, sent = await lost_then_settled(
        api, stripe_services, stripe_emulator, charged=False, aged=timedelta(hours=25)
    )
    assert sent == 0
    assert (row.status, row.failure_reason) == ("failed", "stripe_unreachable")
    after = (await api.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    assert after["amount_refunded"] == 0
    told = await notifications_of(stripe_services, payment["id"])
    assert [n.data["id"] for n in told if n.type == "refund.failed"] == [refund_id]
    audited = await audit_of(stripe_services, payment["id"])
    assert any(a.action == "refund.failed" and a.details["refund_id"] == refund_id for a in audited)
    assert await stripe_refunds(stripe_emulator, payment["stripe_payment_intent_id"]) == []


async def test_unanswered_refund_held_by_a_retry_is_left_to_it(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """Reconciliation never races the request: a key still locked defers the refund."""
    payment = await paid(api)
    refund_id = await lose_refund_answer(api, stripe_emulator, payment, charged=False)
    await age_refund(stripe_services, refund_id, by=timedelta(hours=25))
    async with stripe_services.db.transaction() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.refund_id == refund_id)
            # Locked "now" for as long as the test may take on a loaded machine.
            .values(locked_at=utcnow() + timedelta(hours=1))
        )
    report = await settle_unanswered(stripe_services)
    assert report.deferred == 1
    assert (await refund_row(stripe_services, refund_id)).status == "pending"
