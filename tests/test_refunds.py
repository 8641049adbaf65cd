"""Refunds through the API against the emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from azora_payments.services import Services
from tests.conftest import (
    STRIPE_KEY,
    bearer,
    emulator_clear_faults,
    emulator_faults,
    make_token,
    unique_user,
)

REFUND = "/api/payments/refund"


def operator(idem: str | None = None) -> dict[str, str]:
    return {
        **bearer(make_token("ops_1", roles=["admin"])),
        "Idempotency-Key": idem or uuid.uuid4().hex,
    }


async def paid(
    api: httpx.AsyncClient, *, amount: int = 2000, method: str = "pm_card_visa"
) -> dict[str, Any]:
    response = await api.post(
        "/api/payments/process",
        json={"amount": amount, "currency": "usd", "payment_method_id": method},
        headers={**bearer(make_token(unique_user())), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def stripe_refunds(base: str, intent: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        page = await http.get(f"{base}/v1/refunds", params={"payment_intent": intent, "limit": 100})
    return list(page.json()["data"])


async def card(base: str, number: str) -> str:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        made = await http.post(
            f"{base}/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )
    return str(made.json()["id"])


async def disputed(base: str, intent: str) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        for _ in range(100):
            found = await http.get(f"{base}/v1/disputes", params={"payment_intent": intent})
            if found.json()["data"]:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("no dispute appeared")


async def test_full_refund_by_default(api: httpx.AsyncClient, stripe_emulator: str) -> None:
    payment = await paid(api)
    response = await api.post(
        REFUND,
        json={"payment_id": payment["id"], "reason": "requested_by_customer"},
        headers=operator(),
    )
    assert response.status_code == 201, response.text
    refund = response.json()
    assert refund["id"].startswith("rf_")
    assert (refund["payment_id"], refund["amount"], refund["currency"]) == (
        payment["id"],
        2000,
        "usd",
    )
    assert refund["status"] == "succeeded"
    assert refund["reason"] == "requested_by_customer"
    assert refund["stripe_refund_id"].startswith("re_")
    assert set(refund) == {
        "id",
        "payment_id",
        "amount",
        "currency",
        "status",
        "reason",
        "stripe_refund_id",
        "created_at",
    }
    after = (await api.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    assert after["amount_refunded"] == 2000
    assert [r["id"] for r in after["refunds"]] == [refund["id"]]
    assert "refund.created" in [a["action"] for a in after["audit"]]
    at_stripe = await stripe_refunds(stripe_emulator, payment["stripe_payment_intent_id"])
    assert [(r["id"], r["amount"]) for r in at_stripe] == [(refund["stripe_refund_id"], 2000)]


async def test_partial_refunds_then_nothing_left(api: httpx.AsyncClient) -> None:
    payment = await paid(api)
    first = await api.post(
        REFUND, json={"payment_id": payment["id"], "amount": 500}, headers=operator()
    )
    assert first.status_code == 201
    rest = await api.post(REFUND, json={"payment_id": payment["id"]}, headers=operator())
    assert rest.status_code == 201
    assert rest.json()["amount"] == 1500
    headers = operator()
    none_left = await api.post(REFUND, json={"payment_id": payment["id"]}, headers=headers)
    assert none_left.status_code == 422
    assert none_left.json()["code"] == "amount_exceeds_refundable"
    replay = await api.post(REFUND, json={"payment_id": payment["id"]}, headers=headers)
    assert replay.text == none_left.text
    assert replay.headers["idempotent-replayed"] == "true"


async def test_more_than_remains_is_422(api: httpx.AsyncClient) -> None:
    payment = await paid(api)
    response = await api.post(
        REFUND, json={"payment_id": payment["id"], "amount": 2001}, headers=operator()
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "amount_exceeds_refundable"
    assert problem["errors"] == [{"field": "amount", "message": "must be at most 2000"}]


async def test_concurrent_refunds_never_exceed_the_payment(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    payment = await paid(api)
    responses = await asyncio.gather(
        *[
            api.post(REFUND, json={"payment_id": payment["id"], "amount": 600}, headers=operator())
            for _ in range(5)
        ]
    )
    assert sorted(r.status_code for r in responses) == [201, 201, 201, 422, 422]
    after = (await api.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    assert after["amount_refunded"] == 1800
    at_stripe = await stripe_refunds(stripe_emulator, payment["stripe_payment_intent_id"])
    assert sum(r["amount"] for r in at_stripe) == 1800


async def test_replay_and_reuse(api: httpx.AsyncClient, stripe_emulator: str) -> None:
    payment = await paid(api)
    headers = operator()
    body = {"payment_id": payment["id"], "amount": 700}
    first = await api.post(REFUND, json=body, headers=headers)
    again = await api.post(REFUND, json=body, headers=headers)
    assert again.text == first.text
    assert again.headers["idempotent-replayed"] == "true"
    other = await api.post(REFUND, json={**body, "amount": 800}, headers=headers)
    assert other.json()["code"] == "idempotency_key_reused"
    assert len(await stripe_refunds(stripe_emulator, payment["stripe_payment_intent_id"])) == 1


async def test_only_succeeded_payments(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/payments/process",
        json={"amount": 2000, "currency": "usd", "payment_method_id": "pm_card_chargeDeclined"},
        headers={**bearer(make_token(unique_user())), "Idempotency-Key": uuid.uuid4().hex},
    )
    failed_id = response.json()["payment_id"]
    refused = await api.post(REFUND, json={"payment_id": failed_id}, headers=operator())
    assert refused.status_code == 409
    assert refused.json()["code"] == "payment_not_refundable"


async def test_access_and_validation(api: httpx.AsyncClient) -> None:
    payment = await paid(api)
    customer = {**bearer(make_token(unique_user())), "Idempotency-Key": "k1"}
    assert (await api.post(REFUND, json={"payment_id": payment["id"]})).status_code == 401
    forbidden = await api.post(REFUND, json={"payment_id": payment["id"]}, headers=customer)
    assert forbidden.status_code == 403
    no_key = await api.post(
        REFUND,
        json={"payment_id": payment["id"]},
        headers=bearer(make_token("ops_1", roles=["admin"])),
    )
    assert no_key.json()["code"] == "idempotency_key_required"
    for body, field in [
        ({"payment_id": payment["id"], "amount": 0}, "amount"),
        ({"payment_id": payment["id"], "amount": "5"}, "amount"),
        ({"payment_id": payment["id"], "reason": "because"}, "reason"),
        ({"payment_id": "pi_123"}, "payment_id"),
        ({"payment_id": payment["id"], "extra": True}, "extra"),
    ]:
        bad = await api.post(REFUND, json=body, headers=operator())
        assert bad.status_code == 422, body
        assert field in [e["field"] for e in bad.json()["errors"]]
    missing = await api.post(REFUND, json={"payment_id": "pay_" + "0" * 26}, headers=operator())
    assert missing.status_code == 404


async def test_stripe_down_then_retry_makes_one_refund(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    payment = await paid(api)
    headers = operator()
    await emulator_faults(
        stripe_emulator, method="POST", path="^/v1/refunds$", status=500, times=2, after=True
    )
    try:
        down = await api.post(
            REFUND, json={"payment_id": payment["id"], "amount": 300}, headers=headers
        )
    finally:
        await emulator_clear_faults(stripe_emulator)
    assert down.status_code == 503
    assert down.json()["payment_id"] == payment["id"]
    pending = (await api.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    assert [r["status"] for r in pending["refunds"]] == ["pending"]
    assert pending["amount_refunded"] == 300  # a pending refund counts, as Stripe counts it
    again = await api.post(
        REFUND, json={"payment_id": payment["id"], "amount": 300}, headers=headers
    )
    assert again.status_code == 201
    assert again.json()["status"] == "succeeded"
    at_stripe = await stripe_refunds(stripe_emulator, payment["stripe_payment_intent_id"])
    assert [r["amount"] for r in at_stripe] == [300]


async def test_dashboard_refund_we_did_not_hear_of(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    """Stripe knows less remains than we do: the caller gets 422, our refund is failed."""
    payment = await paid(api)
    await stripe_services.stripe.create_refund(
        refund_id=f"dashboard_{payment['id']}",
        payment_intent_id=payment["stripe_payment_intent_id"],
        amount=1500,
        reason=None,
    )
    response = await api.post(
        REFUND, json={"payment_id": payment["id"], "amount": 1000}, headers=operator()
    )
    assert response.status_code == 422
    assert response.json()["code"] == "amount_exceeds_refundable"
    after = (await api.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    assert [r["status"] for r in after["refunds"]] == ["failed"]
    assert after["amount_refunded"] == 0


@pytest.mark.parametrize("code", ["charge_disputed", "charge_already_refunded"])
async def test_stripe_refusals_keep_their_code(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services, code: str
) -> None:
    if code == "charge_already_refunded":
        payment = await paid(api)
        await stripe_services.stripe.create_refund(
            refund_id=f"dashboard_{payment['id']}",
            payment_intent_id=payment["stripe_payment_intent_id"],
            amount=2000,
            reason=None,
        )
    else:
        # Stripe's test card that is disputed right after it is charged.
        payment = await paid(api, method=await card(stripe_emulator, "4000000000000259"))
        await disputed(stripe_emulator, payment["stripe_payment_intent_id"])
    headers = operator()
    body = {"payment_id": payment["id"], "amount": 100}
    refused = await api.post(REFUND, json=body, headers=headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == code
    assert refused.json()["retryable"] is False
    # A final answer: stored and replayed, without asking Stripe twice.
    again = await api.post(REFUND, json=body, headers=headers)
    assert again.text == refused.text
    assert again.headers["idempotent-replayed"] == "true"
    after = (await api.get(f"/api/payments/{payment['id']}", headers=operator())).json()
    ours = [r for r in after["refunds"] if r["amount"] == 100]
    assert [r["status"] for r in ours] == ["failed"]
