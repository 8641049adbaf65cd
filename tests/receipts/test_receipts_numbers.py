"""Receipt numbers: one receipt per payment whichever path learnt of the success, numbers
sequential per year with no gap or duplicate under concurrent workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select

from azora_payments.config import Settings
from azora_payments.db.models import Job, Payment, Receipt, ReceiptSequence
from azora_payments.domain import receipts, reconcile
from azora_payments.jobs.registry import get_kind, import_kind_modules
from azora_payments.jobs.worker import Worker, WorkerOptions
from azora_payments.services import Services
from tests.conftest import open_services, unique_user
from tests.receipts.conftest import SmtpServer, pay, run_receipt_jobs, seed_succeeded
from tests.webhooks.conftest import (
    event,
    intent_obj,
    run_apply_jobs,
    seed_payment,
    send,
)


async def all_receipts(services: Services) -> list[Receipt]:
    async with services.db.read() as session:
        return list((await session.scalars(select(Receipt).order_by(Receipt.sequence))).all())


async def test_numbers_are_sequential_per_year(receipt_services: Services) -> None:
    ids = [await seed_succeeded(receipt_services, enqueue=False) for _ in range(3)]
    pending = await seed_payment(receipt_services, status="processing")
    when = [
        datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
    ]
    async with receipt_services.db.transaction() as session:
        issued = [
            await receipts.issue(session, payment_id=pid, now=at)
            for pid, at in zip(ids, when, strict=True)
        ]
        again = await receipts.issue(session, payment_id=ids[0], now=when[2])
        assert await receipts.issue(session, payment_id=pending.id) is None
        assert await receipts.issue(session, payment_id="pay_missing") is None
    assert [r.number for r in issued if r] == ["R-2025-000001", "R-2025-000002", "R-2026-000001"]
    assert issued[0] is not None
    assert again is not None
    assert again.id == issued[0].id
    async with receipt_services.db.read() as session:
        years = dict(
            (await session.execute(select(ReceiptSequence.year, ReceiptSequence.last_value))).all()
        )
    assert years == {2025: 2, 2026: 1}


async def test_one_receipt_whichever_path_learnt_it(
    receipt_api: httpx.AsyncClient, receipt_services: Services, smtp: SmtpServer
) -> None:
    paid = await pay(receipt_api, unique_user())
    async with receipt_services.db.read() as session:
        payment = await session.get(Payment, paid["id"])
    assert payment is not None
    assert payment.stripe_payment_intent_id
    # Stripe's webhook for the same success, then a reconciliation pass.
    obj = intent_obj(
        payment.stripe_payment_intent_id,
        status="succeeded",
        amount=2500,
        payment_id=payment.id,
        charge_id=payment.stripe_charge_id,
    )
    obj["currency"] = "eur"
    assert (await send(receipt_api, event("payment_intent.succeeded", obj))).status_code == 200
    await run_apply_jobs(receipt_services)
    assert not (await reconcile.reconcile(receipt_services)).errors
    await run_receipt_jobs(receipt_services)
    await run_receipt_jobs(receipt_services)

    # A payment whose success only a webhook told.
    seeded = await seed_payment(receipt_services, status="processing", pi_id="pi_rcpt_hook")
    hooked = intent_obj("pi_rcpt_hook", status="succeeded", payment_id=seeded.id)
    assert (await send(receipt_api, event("payment_intent.succeeded", hooked))).status_code == 200
    await run_apply_jobs(receipt_services)
    await run_receipt_jobs(receipt_services)

    rows = await all_receipts(receipt_services)
    assert sorted(r.payment_id for r in rows) == sorted([paid["id"], seeded.id])
    assert [r.sequence for r in rows] == [1, 2]
    assert len(smtp.inbox.messages) == 1  # the seeded payment has no receipt_email
    async with receipt_services.db.read() as session:
        jobs = await session.scalar(
            select(func.count()).select_from(Job).where(Job.kind == receipts.ISSUE)
        )
    assert jobs == 2


async def test_concurrent_workers_leave_no_gap(receipt_settings: Settings) -> None:
    count = 24
    async with open_services(receipt_settings) as one, open_services(receipt_settings) as two:
        for _ in range(count):
            await seed_succeeded(one, receipt_email=None)
        import_kind_modules()
        options = WorkerOptions(once=True, poll_seconds=0.01, concurrency=4)
        kinds = {receipts.ISSUE: get_kind(receipts.ISSUE)}
        workers = [Worker(svc, options=options, kinds=kinds) for svc in (one, two)]
        await asyncio.gather(*(w.run() for w in workers))
        assert sum(w.runs for w in workers) == count
        rows = await all_receipts(one)
    assert [r.sequence for r in rows] == list(range(1, count + 1))
    assert len({r.payment_id for r in rows}) == count
    assert len({r.number for r in rows}) == count


async def test_two_renderers_store_one_new_version(receipt_settings: Settings) -> None:
    """After a refund, two processes asking for the receipt at once (the API and a worker)
    store one version 2 between them: the second finds the first's version current."""
    from azora_payments.db.models import Refund
    from azora_payments.db.repositories import receipts as receipts_repo
    from azora_payments.db.types import utcnow
    from azora_payments.ids import new_id

    async with open_services(receipt_settings) as one, open_services(receipt_settings) as two:
        payment_id = await seed_succeeded(one, receipt_email=None)
        await run_receipt_jobs(one, receipts.ISSUE)
        async with one.db.read() as session:
            receipt = await receipts_repo.of_payment(session, payment_id)
        assert receipt is not None
        async with one.db.transaction() as session:
            session.add(
                Refund(
                    id=new_id("rf"),
                    payment_id=payment_id,
                    amount=500,
                    currency="usd",
                    status="succeeded",
                    created_by="ops_1",
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
        results = await asyncio.gather(
            *(
                receipts.current_pdf(
                    db=svc.db,
                    storage=svc.storage,
                    settings=svc.settings,
                    receipt_id=receipt.id,
                    reason="race",
                )
                for svc in (one, two, one, two)
            )
        )
        async with one.db.read() as session:
            versions = await receipts_repo.versions_of(session, receipt.id)
    assert [v.version for v in versions] == [1, 2]
    assert {r.version for r in results} == {2}
    assert len({r.data for r in results}) == 1


async def test_a_lost_object_is_put_back_under_its_own_version(
    receipt_settings: Settings, receipt_services: Services
) -> None:
    """The same page renders to the same bytes, so a stored object that went missing is put
    back as the version it was, not counted as a new one."""
    from pathlib import Path

    from azora_payments.db.repositories import receipts as receipts_repo

    payment_id = await seed_succeeded(receipt_services, receipt_email=None)
    await run_receipt_jobs(receipt_services, receipts.ISSUE)
    async with receipt_services.db.read() as session:
        receipt = await receipts_repo.of_payment(session, payment_id)
        assert receipt is not None
        [version] = await receipts_repo.versions_of(session, receipt.id)
    stored = Path(receipt_settings.receipt_storage) / version.storage_key
    original = stored.read_bytes()
    stored.unlink()
    again = await receipts.current_pdf(
        db=receipt_services.db,
        storage=receipt_services.storage,
        settings=receipt_settings,
        receipt_id=receipt.id,
        reason="requested",
    )
    assert (again.version, again.data) == (1, original)
    assert stored.read_bytes() == original
    async with receipt_services.db.read() as session:
        assert len(await receipts_repo.versions_of(session, receipt.id)) == 1
