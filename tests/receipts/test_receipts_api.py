"""The receipt endpoints: shapes, readiness, ownership, operators, the PDF, re-sending."""

from __future__ import annotations

import re

import httpx

from azora_payments.db.models import AuditRecord
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.domain import receipts
from azora_payments.services import Services
from tests.conftest import bearer, make_token, unique_user
from tests.receipts.conftest import SmtpServer, pay, pdf_text, run_receipt_jobs

# Made at import: it must outlive the whole run (a loaded CI machine takes over half an hour).
OPERATOR = bearer(make_token("ops_1", roles=["admin"], lifetime=6 * 3600))


async def test_receipt_shape_and_pdf(
    receipt_api: httpx.AsyncClient, receipt_services: Services, smtp: SmtpServer
) -> None:
    user = unique_user()
    headers = bearer(make_token(user))
    paid = await pay(receipt_api, user)
    path = f"/api/payments/{paid['id']}/receipt"
    before = await receipt_api.get(path, headers=headers)
    assert before.status_code == 404
    assert before.json()["code"] == "receipt_not_ready"

    await run_receipt_jobs(receipt_services)
    body = (await receipt_api.get(path, headers=headers)).json()
    assert set(body) == {
        "id", "number", "payment_id", "amount", "currency", "issued_at", "pdf_url", "emailed_at"
    }  # fmt: skip
    assert body["id"].startswith("rcpt_")
    assert re.fullmatch(r"R-\d{4}-\d{6}", body["number"])
    assert (body["payment_id"], body["amount"], body["currency"]) == (paid["id"], 2500, "eur")
    assert body["issued_at"].endswith("Z")
    assert body["emailed_at"] is not None
    assert body["emailed_at"].endswith("Z")
    assert body["pdf_url"] == f"/api/payments/{paid['id']}/receipt.pdf"
    payment = (await receipt_api.get(f"/api/payments/{paid['id']}", headers=headers)).json()
    assert payment["receipt"] == {"id": body["id"], "number": body["number"]}

    pdf = await receipt_api.get(body["pdf_url"], headers=headers)
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    text = pdf_text(pdf.content)
    for expected in (
        "Azora Test Shop", "1 Quay Street", body["number"], "€25.00", "Visa", "4242",
        "buyer@shop.example", "Annual plan",
    ):  # fmt: skip
        assert expected in text, expected
    assert "Refund" not in text
    assert pdf.headers["x-receipt-version"] == "1"

    refund = await receipt_api.post(
        "/api/payments/refund",
        json={"payment_id": paid["id"], "amount": 500},
        headers={**OPERATOR, "Idempotency-Key": "rf-" + paid["id"]},
    )
    assert refund.status_code == 201, refund.text
    # The refund queued a new rendering: version 2, which the API serves from then on.
    assert await run_receipt_jobs(receipt_services, receipts.RENDER) >= 1
    second = await receipt_api.get(body["pdf_url"], headers=headers)
    assert second.headers["x-receipt-version"] == "2"
    text = pdf_text(second.content)
    assert "Refund," in text
    assert "-€5.00" in text
    assert "Net paid €20.00" in text
    assert "PARTIALLY REFUNDED" in text
    # Served from the store, not drawn per request: the same bytes each time, and both
    # versions kept (the first as the customer was first sent it).
    again = await receipt_api.get(body["pdf_url"], headers=headers)
    assert again.content == second.content
    stored = receipt_services.settings.receipt_storage
    year = body["number"].split("-")[1]
    with open(f"{stored}/receipts/{year}/{body['number']}/v1.pdf", "rb") as handle:
        assert handle.read() == pdf.content
    with open(f"{stored}/receipts/{year}/{body['number']}/v2.pdf", "rb") as handle:
        assert handle.read() == second.content
    async with receipt_services.db.read() as session:
        versions = await receipts_repo.versions_of(session, body["id"])
    assert [(v.version, v.reason) for v in versions] == [
        (1, "issued"),
        (2, f"refund {refund.json()['id']}:succeeded"),
    ]


async def test_other_users_and_operators(
    receipt_api: httpx.AsyncClient, receipt_services: Services, smtp: SmtpServer
) -> None:
    user = unique_user()
    paid = await pay(receipt_api, user)
    await run_receipt_jobs(receipt_services)
    stranger = bearer(make_token(unique_user()))
    for suffix in ("receipt", "receipt.pdf"):
        path = f"/api/payments/{paid['id']}/{suffix}"
        hidden = await receipt_api.get(path, headers=stranger)
        missing = await receipt_api.get(
            "/api/payments/pay_00000000000000000000000000/" + suffix, headers=stranger
        )
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["code"] == missing.json()["code"] == "not_found"
        assert (await receipt_api.get(path, headers=OPERATOR)).status_code == 200
    sent = await receipt_api.post(f"/api/payments/{paid['id']}/receipt/email", headers=stranger)
    assert sent.status_code == 404
    bad = await receipt_api.get("/api/payments/nope/receipt", headers=stranger)
    assert bad.status_code == 404
    assert (await receipt_api.get(f"/api/payments/{paid['id']}/receipt")).status_code == 401


async def test_resend_is_queued_sent_and_rate_limited(
    receipt_api: httpx.AsyncClient, receipt_services: Services, smtp: SmtpServer
) -> None:
    user = unique_user()
    headers = bearer(make_token(user))
    paid = await pay(receipt_api, user)
    path = f"/api/payments/{paid['id']}/receipt/email"
    early = await receipt_api.post(path, headers=headers)
    assert early.json()["code"] == "receipt_not_ready"
    await run_receipt_jobs(receipt_services)
    assert len(smtp.inbox.messages) == 1

    queued = await receipt_api.post(path, headers=headers)
    assert queued.status_code == 202, queued.text
    assert queued.json()["payment_id"] == paid["id"]
    assert (await receipt_api.post(path, headers=OPERATOR)).status_code == 202
    await run_receipt_jobs(receipt_services)
    assert len(smtp.inbox.messages) == 3
    ids = {m["Message-ID"] for m in smtp.inbox.messages}
    assert len(ids) == 3
    assert all(queued.json()["id"] in i for i in ids)

    assert (await receipt_api.post(path, headers=headers)).status_code == 202
    limited = await receipt_api.post(path, headers=headers)  # 3/hour per payment
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.json()["code"] == "rate_limited"

    async with receipt_services.db.read() as session:
        from sqlalchemy import select

        rows = (
            await session.scalars(select(AuditRecord).where(AuditRecord.payment_id == paid["id"]))
        ).all()
    actions = [(r.action, r.actor) for r in rows if r.action.startswith("receipt.")]
    assert actions.count(("receipt.issued", "system")) == 1
    assert actions.count(("receipt.emailed", "system")) == 3
    assert actions.count(("receipt.email_requested", user)) == 2
    assert actions.count(("receipt.email_requested", "ops_1")) == 1
