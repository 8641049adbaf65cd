"""The customer is e-mailed, once, when a refund succeeds, with the updated receipt."""

from __future__ import annotations

import uuid

import httpx

from azora_payments.domain.outcomes import REFUND_EMAIL
from azora_payments.services import Services
from tests.conftest import bearer, make_token
from tests.receipts.conftest import SmtpServer, pay, pdf_text, run_receipt_jobs


async def test_a_succeeded_refund_is_e_mailed_once(
    receipt_api: httpx.AsyncClient, receipt_services: Services, smtp: SmtpServer
) -> None:
    paid = await pay(receipt_api, "user_refunded", email="refunded@shop.example")
    await run_receipt_jobs(receipt_services)  # the receipt, and its e-mail
    smtp.inbox.messages.clear()
    refund = await receipt_api.post(
        "/api/payments/refund",
        json={"payment_id": paid["id"], "amount": 1000},
        headers={
            **bearer(make_token("ops_1", roles=["admin"])),
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    assert refund.status_code == 201
    assert await run_receipt_jobs(receipt_services, REFUND_EMAIL) == 1
    assert await run_receipt_jobs(receipt_services, REFUND_EMAIL) == 0
    [message] = smtp.inbox.messages
    assert message["To"] == "refunded@shop.example"
    assert message["Subject"] == "Your refund of €10.00 from Azora Test Shop"
    assert message["Message-ID"] == f"<{refund.json()['id']}.refunded@shop.example>"
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content()
    assert "€10.00" in body
    assert "Annual plan" in body
    assert "receipt R-" in body
    # The receipt as it now stands is attached: the version that lists this refund, the same
    # the API serves from now on.
    [attachment] = list(message.iter_attachments())
    attached = pdf_text(attachment.get_content())
    assert "Net paid €15.00" in attached
    assert "PARTIALLY REFUNDED" in attached
    served = await receipt_api.get(
        f"/api/payments/{paid['id']}/receipt.pdf", headers=bearer(make_token("user_refunded"))
    )
    assert served.content == attachment.get_content()
    assert served.headers["x-receipt-version"] == "2"
    detail = (
        await receipt_api.get(
            f"/api/payments/{paid['id']}", headers=bearer(make_token("ops_1", roles=["admin"]))
        )
    ).json()
    assert "refund.emailed" in [a["action"] for a in detail["audit"]]
