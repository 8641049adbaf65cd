"""Receipt suites: a real SMTP server (aiosmtpd) that keeps what it is sent, settings and app
wired to it and to the Stripe emulator, and running the receipt jobs once."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from pypdf import PdfReader

from azora_payments.config import Settings
from azora_payments.domain import receipts
from azora_payments.jobs.registry import get_kind, import_kind_modules
from azora_payments.jobs.worker import Worker, WorkerOptions
from azora_payments.services import Services
from tests.conftest import (
    bearer,
    emulator_settings,
    free_port,
    make_token,
    stack_fixtures,
)


class Inbox:
    """An aiosmtpd handler: every message accepted, kept parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receipt_settings(
    database_url: str, tmp_path: Path, stripe_emulator: str, smtp: SmtpServer
) -> Settings:
    return emulator_settings(
        database_url,
        tmp_path,
        stripe_emulator,
        smtp_url=smtp.url,
        merchant_name="Azora Test Shop",
        merchant_address="1 Quay Street\nDublin D02",
        receipt_from_email="receipts@shop.example",
    )


receipt_services, receipt_api = stack_fixtures(
    "receipt_settings", services="receipt_services", client="receipt_api"
)


OPTIONS = WorkerOptions(once=True, poll_seconds=0.02, concurrency=4)


async def run_receipt_jobs(services: Services, *kinds: str) -> int:
    """Run the due receipt jobs once (issue, then e-mail unless `kinds` says otherwise)."""
    import_kind_modules()
    runs = 0
    for kind in kinds or (receipts.ISSUE, receipts.EMAIL):
        worker = Worker(services, options=OPTIONS, kinds={kind: get_kind(kind)})
        await worker.run()
        runs += worker.runs
    return runs


async def pay(
    api: httpx.AsyncClient,
    user: str,
    *,
    amount: int = 2500,
    currency: str = "eur",
    description: str | None = "Annual plan",
    email: str = "buyer@shop.example",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": amount,
        "currency": currency,
        "payment_method_id": "pm_card_visa",
    }
    if description is not None:
        body["description"] = description
    response = await api.post(
        "/api/payments/process",
        json=body,
        headers={**bearer(make_token(user, email=email)), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    paid: dict[str, Any] = response.json()
    assert paid["status"] == "succeeded"
    return paid


def pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


async def seed_succeeded(
    services: Services,
    *,
    user_id: str = "user_1",
    amount: int = 2000,
    currency: str = "usd",
    receipt_email: str | None = "buyer@shop.example",
    enqueue: bool = True,
) -> str:
    """A succeeded payment written straight to the database (no Stripe), its receipt queued as
    `outcomes` queues it."""
    from azora_payments.db.models import Payment
    from azora_payments.db.types import utcnow
    from azora_payments.ids import new_id

    now = utcnow()
    payment = Payment(
        id=new_id("pay"),
        user_id=user_id,
        status="succeeded",
        amount=amount,
        currency=currency,
        amount_refunded=0,
        metadata_={},
        save_payment_method=False,
        receipt_email=receipt_email,
        card_brand="mastercard",
        card_last4="4444",
        disputed=False,
        created_at=now,
        updated_at=now,
    )
    async with services.db.transaction() as session:
        session.add(payment)
        if enqueue:
            await receipts.enqueue_issue(session, payment)
    return payment.id
