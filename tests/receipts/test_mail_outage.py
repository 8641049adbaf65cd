"""An e-mail accepted by the SMTP server is a fact: a database outage at that moment delays its
record, never sends it twice. A private PostgreSQL is stopped hard the instant the SMTP server
accepts the message, and started again 5 s later; the job is then run again, as after a lost
lease, and must find the e-mail already recorded."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from azora_payments.db.models import Job, Receipt, Refund
from azora_payments.db.types import utcnow
from azora_payments.domain import receipts
from azora_payments.domain.outcomes import REFUND_EMAIL
from azora_payments.services import Services
from tests.conftest import bearer, make_token
from tests.private_services import PrivatePostgres
from tests.receipts.conftest import SmtpServer, pay, run_receipt_jobs

pytestmark = pytest.mark.postgres

OUTAGE_SECONDS = 5.0


@pytest.fixture
def database_url(private_database_url: str) -> str:
    return private_database_url


class OutageOnAccept:
    """Wraps the SMTP handler: the next accepted message stops PostgreSQL first."""

    def __init__(self, smtp: SmtpServer, pg: PrivatePostgres) -> None:
        self.pg = pg
        self.inner = smtp.inbox.handle_DATA
        self.restarted = threading.Event()
        self.armed = False
        smtp.inbox.handle_DATA = self.handle_DATA  # type: ignore[method-assign]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await self.inner(server, session, envelope)
        if self.armed:
            self.armed = False
            self.pg.stop("immediate")
            threading.Timer(OUTAGE_SECONDS, self._restart).start()
        return answer

    def _restart(self) -> None:
        self.pg.start()
        self.restarted.set()


@pytest.fixture
def outage(smtp: SmtpServer, private_postgres: PrivatePostgres) -> Iterator[OutageOnAccept]:
    hook = OutageOnAccept(smtp, private_postgres)
    yield hook
    if hook.armed is False and not hook.restarted.is_set():
        hook.restarted.wait(OUTAGE_SECONDS * 4)
    private_postgres.start()


async def _run_again(services: Services, kind: str) -> None:
    """Make the kind's job due again, as if its lease had run out mid-record."""
    async with services.db.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.kind == kind)
            .values(status="ready", run_at=utcnow(), locked_by=None, locked_until=None)
        )
    await run_receipt_jobs(services, kind)


async def test_a_receipt_e_mail_is_not_sent_twice_after_a_database_outage(
    receipt_api: httpx.AsyncClient,
    receipt_services: Services,
    smtp: SmtpServer,
    outage: OutageOnAccept,
) -> None:
    await pay(receipt_api, f"user_{uuid.uuid4().hex[:8]}")
    await run_receipt_jobs(receipt_services, receipts.ISSUE)
    outage.armed = True
    await run_receipt_jobs(receipt_services, receipts.EMAIL)
    assert outage.restarted.wait(OUTAGE_SECONDS * 4)
    await _run_again(receipt_services, receipts.EMAIL)
    assert len(smtp.inbox.messages) == 1, [m["Message-ID"] for m in smtp.inbox.messages]
    async with receipt_services.db.read() as session:
        (receipt,) = (await session.scalars(select(Receipt))).all()
    assert receipt.emailed_at is not None


async def test_a_refund_e_mail_is_not_sent_twice_after_a_database_outage(
    receipt_api: httpx.AsyncClient,
    receipt_services: Services,
    smtp: SmtpServer,
    outage: OutageOnAccept,
) -> None:
    paid = await pay(receipt_api, f"user_{uuid.uuid4().hex[:8]}")
    await run_receipt_jobs(receipt_services)
    refund = await receipt_api.post(
        "/api/payments/refund",
        json={"payment_id": paid["id"], "amount": 1000},
        headers={
            **bearer(make_token("ops_1", roles=["admin"])),
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    assert refund.status_code == 201, refund.text
    smtp.inbox.messages.clear()
    outage.armed = True
    await run_receipt_jobs(receipt_services, REFUND_EMAIL)
    assert outage.restarted.wait(OUTAGE_SECONDS * 4)
    await _run_again(receipt_services, REFUND_EMAIL)
    assert [m["Message-ID"] for m in smtp.inbox.messages] == [
        f"<{refund.json()['id']}.refunded@shop.example>"
    ]
    async with receipt_services.db.read() as session:
        row = await session.get(Refund, refund.json()["id"])
    assert row is not None
    assert row.emailed_at is not None
