"""Where receipts go (API.md, Payments and Receipts): `receipt_email` is exactly one plain
address, sent to with an explicit envelope and never given to Stripe; re-sends are limited per
payment and per caller, counted in the database so that a Redis outage lets none through; an
operator may choose another address."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from azora_payments.config import Settings
from azora_payments.db.models import AuditRecord, Payment
from azora_payments.services import Services
from tests.conftest import (
    STRIPE_KEY,
    asgi_client,
    bearer,
    emulator_settings,
    free_port,
    make_token,
    open_services,
    unique_user,
)
from tests.receipts.conftest import SmtpServer, run_receipt_jobs, seed_succeeded

# Made at import: it must outlive the whole run (a loaded CI machine takes over half an hour).
OPERATOR = bearer(make_token("ops_1", roles=["admin"], lifetime=6 * 3600))

NOT_ONE_PLAIN_ADDRESS = [
    "a@shop.example,root",
    "a@shop.example, b@shop.example",
    "a@shop.example;b@shop.example",
    "Ada <a@shop.example>",
    "<a@shop.example>",
    '"a b"@shop.example',
    "a@shop.example\r\nBcc: b@shop.example",
    "a b@shop.example",
    "a@@shop.example",
    "a@shop",
    "a@shop.example.",
    "a@-shop.example",
    "a@shop.123",
    "a..b@shop.example",
    ".a@shop.example",
    "a@",
    "@shop.example",
    "élodie@shop.example",
    "a(comment)@shop.example",
    "x" * 65 + "@shop.example",
]


@pytest.mark.parametrize("value", NOT_ONE_PLAIN_ADDRESS)
def test_only_one_plain_address_passes(value: str) -> None:
    from azora_payments.addresses import InvalidAddress, plain_address

    with pytest.raises(InvalidAddress):
        plain_address(value)


@pytest.mark.parametrize(
    "value", ["a@shop.example", "first.last+tag@mail.shop.example", "o'neil@xn--bcher-kva.example"]
)
def test_plain_addresses_pass_as_written(value: str) -> None:
    from azora_payments.addresses import plain_address

    assert plain_address(value) == value


async def process(api: httpx.AsyncClient, user: str, **fields: Any) -> httpx.Response:
    body = {"amount": 2500, "currency": "eur", "payment_method_id": "pm_card_visa", **fields}
    return await api.post(
        "/api/payments/process",
        json=body,
        headers={**bearer(make_token(user)), "Idempotency-Key": uuid.uuid4().hex},
    )


@pytest.mark.parametrize("value", ["a@shop.example,root", "Ada <a@shop.example>", "a@shop"])
async def test_receipt_email_that_is_not_one_plain_address_is_422(
    receipt_api: httpx.AsyncClient, value: str
) -> None:
    response = await process(receipt_api, unique_user(), receipt_email=value)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["receipt_email"]


async def test_receipt_goes_to_that_one_address_and_stripe_never_sees_it(
    receipt_api: httpx.AsyncClient,
    receipt_services: Services,
    smtp: SmtpServer,
    stripe_emulator: str,
) -> None:
    response = await process(receipt_api, unique_user(), receipt_email="payer@shop.example")
    assert response.status_code == 201, response.text
    await run_receipt_jobs(receipt_services)
    assert smtp.inbox.recipients == [["payer@shop.example"]]
    intent_id = response.json()["stripe_payment_intent_id"]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        intent = (await http.get(f"{stripe_emulator}/v1/payment_intents/{intent_id}")).json()
    # Stripe would e-mail a receipt of its own, with another number.
    assert intent["id"] == intent_id
    assert intent.get("receipt_email") is None


async def test_a_token_email_that_is_a_list_is_not_used(
    receipt_api: httpx.AsyncClient, receipt_services: Services, smtp: SmtpServer
) -> None:
    response = await receipt_api.post(
        "/api/payments/process",
        json={"amount": 2500, "currency": "eur", "payment_method_id": "pm_card_visa"},
        headers={
            **bearer(make_token(unique_user(), email="a@shop.example,root")),
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    assert response.status_code == 201, response.text
    async with receipt_services.db.read() as session:
        payment = await session.get(Payment, response.json()["id"])
    assert payment is not None
    assert payment.receipt_email is None
    await run_receipt_jobs(receipt_services)
    assert smtp.inbox.recipients == []


async def test_a_stored_list_from_before_the_rule_is_not_sent(
    receipt_services: Services, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    await seed_succeeded(receipt_services, receipt_email="a@shop.example,root")
    await run_receipt_jobs(receipt_services)
    assert smtp.inbox.recipients == []
    assert any("not sent: no address" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- re-sends


async def issued(services: Services, user: str, count: int) -> list[str]:
    """`count` succeeded payments of `user`, their receipts issued and e-mailed."""
    ids = [await seed_succeeded(services, user_id=user) for _ in range(count)]
    await run_receipt_jobs(services)
    return ids


def resend(http: httpx.AsyncClient, payment_id: str, headers: dict[str, str], **body: Any) -> Any:
    return http.post(
        f"/api/payments/{payment_id}/receipt/email", headers=headers, json=body or None
    )


async def test_resends_are_limited_per_user_across_payments(
    receipt_settings: Settings, smtp: SmtpServer
) -> None:
    settings = receipt_settings.model_copy(update={"rate_limit_receipt_email_user": "4/hour"})
    user = unique_user()
    headers = bearer(make_token(user))
    async with open_services(settings) as services, asgi_client(settings, services) as http:
        first, second, third = await issued(services, user, 3)
        for _ in range(3):
            assert (await resend(http, first, headers)).status_code == 202
        per_payment = await resend(http, first, headers)
        assert per_payment.status_code == 429
        assert (await resend(http, second, headers)).status_code == 202
        per_user = await resend(http, third, headers)  # a fresh payment, the same payer
        assert per_user.status_code == 429, per_user.text
        assert per_user.json()["code"] == "rate_limited"
        assert 0 < int(per_user.headers["Retry-After"]) <= 3600
        # Another payer is not affected.
        other = unique_user()
        [theirs] = await issued(services, other, 1)
        assert (await resend(http, theirs, bearer(make_token(other)))).status_code == 202


async def test_resend_limits_hold_when_redis_is_down(
    database_url: str, tmp_path: Path, stripe_emulator: str, smtp: SmtpServer
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = emulator_settings(
        database_url,
        tmp_path,
        stripe_emulator,
        smtp_url=smtp.url,
        redis_url=dead_redis,
        rate_limit_receipt_email="2/hour",
        rate_limit_receipt_email_user="3/hour",
    )
    user = unique_user()
    headers = bearer(make_token(user))
    async with open_services(settings) as services, asgi_client(settings, services) as http:
        first, second = await issued(services, user, 2)
        assert [(await resend(http, first, headers)).status_code for _ in range(3)] == [
            202,
            202,
            429,
        ]
        assert [(await resend(http, second, headers)).status_code for _ in range(2)] == [202, 429]


async def test_an_operator_may_send_to_another_address(
    receipt_api: httpx.AsyncClient, receipt_services: Services, smtp: SmtpServer
) -> None:
    user = unique_user()
    [payment_id] = await issued(receipt_services, user, 1)
    assert smtp.inbox.recipients == [["buyer@shop.example"]]
    sent = await resend(receipt_api, payment_id, OPERATOR, email="accounts@buyer.example")
    assert sent.status_code == 202, sent.text
    await run_receipt_jobs(receipt_services)
    assert smtp.inbox.recipients[-1] == ["accounts@buyer.example"]
    async with receipt_services.db.read() as session:
        record = await session.scalar(
            select(AuditRecord).where(
                AuditRecord.payment_id == payment_id,
                AuditRecord.action == "receipt.email_requested",
            )
        )
    assert record is not None
    assert (record.actor, record.details["email"]) == ("ops_1", "accounts@buyer.example")

    # The payer may not choose: that would be mail from us to anybody.
    payer = bearer(make_token(user))
    refused = await resend(receipt_api, payment_id, payer, email="stranger@elsewhere.example")
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    for body, status in (
        ({"email": "a@b.example,root"}, 422),
        ({"email": 7}, 422),
        ({"address": "a@b.example"}, 422),
    ):
        response = await resend(receipt_api, payment_id, OPERATOR, **body)
        assert response.status_code == status, (body, response.text)
    broken = await receipt_api.post(
        f"/api/payments/{payment_id}/receipt/email", headers=OPERATOR, content=b"{"
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "invalid_json"
    await run_receipt_jobs(receipt_services)
    assert len(smtp.inbox.recipients) == 2
