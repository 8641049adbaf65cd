"""Workers woken by the ingest's NOTIFY instead of their next poll, and two worker processes
applying a stream of events exactly once (PostgreSQL: SQLite has neither LISTEN nor two
writers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

from azora_payments.db.models import AuditRecord, Job, Notification, Payment, WebhookEvent
from azora_payments.devstack.processes import start_worker
from azora_payments.domain.events import APPLY_KIND
from azora_payments.jobs.registry import get_kind, import_kind_modules
from azora_payments.jobs.worker import Worker, WorkerOptions
from azora_payments.services import Services
from tests.conftest import postgres_only, server_env
from tests.webhooks.conftest import (
    dispute_obj,
    event,
    event_row,
    intent_obj,
    seed_payment,
    send,
)

POLL = 10.0  # long, so that only a notification can explain a prompt claim


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@postgres_only  # LISTEN/NOTIFY and concurrent workers are PostgreSQL's
async def test_an_idle_worker_claims_an_ingested_event_before_its_poll_interval(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    import_kind_modules()
    options = WorkerOptions(poll_seconds=POLL, concurrency=4)
    worker = Worker(hook_services, options=options, kinds={APPLY_KIND: get_kind(APPLY_KIND)})
    task = asyncio.create_task(worker.run())
    try:

        async def listening() -> bool:
            async with hook_services.db.transaction() as session:
                found = await session.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND query LIKE 'LISTEN %'"
                    )
                )
            return bool(found)

        # Before: nobody listens (the wait runs out and the event then waits for the poll).
        await wait_for(listening, timeout=3.0)
        await asyncio.sleep(0.3)  # its first claim, which found nothing, is behind it
        payment = await seed_payment(hook_services, status="processing", pi_id="pi_wake")
        evt = event("payment_intent.succeeded", intent_obj("pi_wake", status="succeeded"))
        sent = time.monotonic()
        assert (await send(hook_client, evt)).status_code == 200

        async def applied() -> bool:
            row = await event_row(hook_services, evt["id"])
            return row is not None and row.status == "applied"

        assert await wait_for(applied, timeout=POLL + 5)
        waited = time.monotonic() - sent
        # Polling alone: the rest of the 10 s interval (over 6 s). Notified: at once.
        assert waited < POLL / 4, f"applied {waited:.2f} s after the 200"
        async with hook_services.db.transaction() as session:
            stored = await session.get(Payment, payment.id)
            assert stored is not None
            assert stored.status == "succeeded"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


@postgres_only  # LISTEN/NOTIFY and concurrent workers are PostgreSQL's
async def test_two_worker_processes_apply_each_event_once(
    hook_client: httpx.AsyncClient, hook_services: Services, tmp_path: Path
) -> None:
    count = 60
    payments = [
        await seed_payment(hook_services, status="processing", pi_id=f"pi_two_{n}")
        for n in range(count)
    ]
    env = server_env(hook_services.settings, WORKER_POLL_SECONDS="0.2", LOG_LEVEL="INFO")
    workers = [
        start_worker(env, tmp_path / f"worker-{n}.log", args=["--kinds", APPLY_KIND])
        for n in range(2)
    ]
    try:
        sent: list[str] = []
        for n in range(count):
            succeeded = event(
                "payment_intent.succeeded",
                intent_obj(f"pi_two_{n}", status="succeeded", charge_id=f"ch_two_{n}"),
            )
            disputed = event(
                "charge.dispute.created",
                dispute_obj(
                    f"dp_two_{n}",
                    status="needs_response",
                    charge_id=f"ch_two_{n}",
                    pi_id=f"pi_two_{n}",
                ),
            )
            # Every other payment hears of its dispute first, and one delivery in five twice.
            pair = [succeeded, disputed] if n % 2 else [disputed, succeeded]
            for evt in pair + ([pair[0]] if n % 5 == 0 else []):
                assert (await send(hook_client, evt)).status_code == 200
            sent += [evt["id"] for evt in pair]

        async def all_applied() -> bool:
            async with hook_services.db.transaction() as session:
                left = await session.scalar(
                    select(func.count())
                    .select_from(WebhookEvent)
                    .where(WebhookEvent.status != "applied")
                )
            return left == 0

        assert await wait_for(all_applied, timeout=90)
    finally:
        for worker in workers:
            worker.stop()
    for worker in workers:
        assert worker.returncode == 0, worker.output()

    async with hook_services.db.transaction() as session:
        events = (await session.scalars(select(WebhookEvent))).all()
        jobs = (await session.scalars(select(Job))).all()
        audits = (await session.execute(select(AuditRecord.payment_id, AuditRecord.action))).all()
        told = (await session.execute(select(Notification.payment_id, Notification.type))).all()
        stored = {p.id: p for p in (await session.scalars(select(Payment))).all()}
    assert sorted(e.id for e in events) == sorted(sent)
    assert {(e.status, e.attempts) for e in events} == {("applied", 1)}
    apply_jobs = [j for j in jobs if j.kind == APPLY_KIND]
    assert len(apply_jobs) == 2 * count
    assert {(j.status, j.attempts) for j in apply_jobs} == {("done", 1)}
    for payment in payments:
        row = stored[payment.id]
        assert (row.status, row.disputed) == ("succeeded", True)
        assert audits.count((payment.id, "payment.succeeded")) == 1
        assert told.count((payment.id, "payment.succeeded")) == 1
        assert told.count((payment.id, "payment.disputed")) == 1
        receipts = [j for j in jobs if j.unique_key == f"receipt:{payment.id}"]
        assert len(receipts) == 1
