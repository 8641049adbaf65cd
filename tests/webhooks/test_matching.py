"""An intent or event is applied to a payment only when it matches it (issue 9, item 8): our
`azora_payment_id`, amount, currency and Stripe customer. Another integration on the same
Stripe account cannot settle our payments; what does not match is logged, audited and left."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from azora_payments.db.models import AuditRecord, Payment, WebhookEvent
from azora_payments.services import Services
from tests.webhooks.conftest import event, intent_obj, reload, run_apply_jobs, seed_payment, send


async def mismatches(services: Services, payment_id: str) -> list[dict[str, Any]]:
    async with services.db.read() as session:
        found = await session.scalars(
            select(AuditRecord).where(
                AuditRecord.payment_id == payment_id,
                AuditRecord.action == "payment.intent_mismatch",
            )
        )
        return [r.details for r in found]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 1}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"customer": "cus_someone_else"}, "customer"),
        ({"metadata": {"azora_payment_id": "pay_other"}}, "azora_payment_id"),
    ],
)
async def test_an_intent_that_is_not_the_payments_is_not_applied(
    hook_client: httpx.AsyncClient, hook_services: Services, change: dict[str, Any], field: str
) -> None:
    payment = await seed_payment(hook_services, status="processing", pi_id="pi_mine")
    foreign = intent_obj("pi_mine", status="succeeded", payment_id=payment.id)
    foreign.update(change)
    evt = event("payment_intent.succeeded", foreign)
    assert (await send(hook_client, evt)).status_code == 200
    await run_apply_jobs(hook_services)

    stored: Payment = await reload(hook_services, Payment, payment.id)
    assert stored.status == "processing"
    row: WebhookEvent = await reload(hook_services, WebhookEvent, evt["id"])
    assert row.status == "ignored"
    assert await mismatches(hook_services, payment.id) == [
        {"stripe_payment_intent_id": "pi_mine", "field": field}
    ]


async def test_an_intent_claiming_our_payment_id_is_not_applied(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    """Before we know our intent's id, another one carrying our payment id in its metadata
    (for 1 cent) must not mark the payment paid."""
    payment = await seed_payment(hook_services, status="processing", pi_id=None)
    evt = event(
        "payment_intent.succeeded",
        intent_obj("pi_theirs", status="succeeded", payment_id=payment.id, amount=1),
    )
    assert (await send(hook_client, evt)).status_code == 200
    await run_apply_jobs(hook_services)
    stored: Payment = await reload(hook_services, Payment, payment.id)
    assert (stored.status, stored.stripe_payment_intent_id) == ("processing", None)
    assert [m["field"] for m in await mismatches(hook_services, payment.id)] == ["amount"]


async def test_the_matching_intent_is_applied(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    payment = await seed_payment(hook_services, status="processing", pi_id=None)
    evt = event(
        "payment_intent.succeeded", intent_obj("pi_ours", status="succeeded", payment_id=payment.id)
    )
    assert (await send(hook_client, evt)).status_code == 200
    await run_apply_jobs(hook_services)
    stored: Payment = await reload(hook_services, Payment, payment.id)
    assert (stored.status, stored.stripe_payment_intent_id) == ("succeeded", "pi_ours")
    assert await mismatches(hook_services, payment.id) == []
