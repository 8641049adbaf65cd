"""Events applied in batches (one transaction for several apply jobs) and recorded in one
statement: the same outcomes as one at a time, and the round trips saved are really saved."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from azora_payments.db.models import AuditRecord, Job, Notification, Payment
from azora_payments.domain import events as events_domain
from azora_payments.domain.events import APPLY_KIND
from azora_payments.services import Services
from tests.webhooks.conftest import (
    charge_obj,
    dispute_obj,
    event,
    event_row,
    intent_obj,
    refund_obj,
    reload,
    run_apply_jobs,
    seed_payment,
    send,
)


@contextmanager
def counting(services: Services) -> Iterator[dict[str, int]]:
    """Statements sent within the block, and the committed transactions that marked an event
    applied (`event_commits`): the claims a polling worker makes meanwhile are left out."""
    seen = {"statements": 0, "event_commits": 0}
    marked: set[int] = set()
    engine = services.db.engine.sync_engine

    def on_statement(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen["statements"] += 1
        if statement.startswith("UPDATE webhook_events"):
            marked.add(id(conn))

    def on_commit(conn: Any) -> None:
        if id(conn) in marked:
            marked.discard(id(conn))
            seen["event_commits"] += 1

    sa_event.listen(engine, "before_cursor_execute", on_statement)
    sa_event.listen(engine, "commit", on_commit)
    try:
        yield seen
    finally:
        sa_event.remove(engine, "before_cursor_execute", on_statement)
        sa_event.remove(engine, "commit", on_commit)


async def succeeded_audits(services: Services, payment_id: str) -> int:
    async with services.db.transaction() as session:
        rows = await session.scalars(
            select(AuditRecord.id).where(
                AuditRecord.payment_id == payment_id, AuditRecord.action == "payment.succeeded"
            )
        )
        return len(rows.all())


async def test_a_batch_of_events_is_applied_in_a_few_commits(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    payments = [
        await seed_payment(hook_services, status="processing", pi_id=f"pi_batch_{n}")
        for n in range(8)
    ]
    for n in range(8):
        evt = event("payment_intent.succeeded", intent_obj(f"pi_batch_{n}", status="succeeded"))
        assert (await send(hook_client, evt)).status_code == 200
    with counting(hook_services) as seen:
        assert await run_apply_jobs(hook_services) == 8
    # One at a time, each event was applied in a transaction of its own (and finished in
    # another); claimed together, they are applied and finished in one.
    assert seen["event_commits"] == 1, seen
    for payment in payments:
        row: Payment = await reload(hook_services, Payment, payment.id)
        assert row.status == "succeeded"
        assert await succeeded_audits(hook_services, payment.id) == 1
    async with hook_services.db.transaction() as session:
        statuses = (
            await session.scalars(select(Job.status).where(Job.kind == events_domain.APPLY_KIND))
        ).all()
    assert statuses == ["done"] * 8


async def test_one_failing_event_in_a_batch_leaves_the_others_applied_once(
    hook_client: httpx.AsyncClient, hook_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    payments = [
        await seed_payment(hook_services, status="processing", pi_id=f"pi_mixed_{n}")
        for n in range(5)
    ]
    evts = [
        event("payment_intent.succeeded", intent_obj(f"pi_mixed_{n}", status="succeeded"))
        for n in range(5)
    ]
    for evt in evts:
        assert (await send(hook_client, evt)).status_code == 200
    real = events_domain.apply_event

    async def broken_for_one(session: Any, payload: dict[str, Any]) -> Any:
        if payload["data"]["object"]["id"] == "pi_mixed_2":
            raise RuntimeError("this one event breaks")
        return await real(session, payload)

    monkeypatch.setattr(events_domain, "apply_event", broken_for_one)
    await run_apply_jobs(hook_services)
    for n, (payment, evt) in enumerate(zip(payments, evts, strict=True)):
        row: Payment = await reload(hook_services, Payment, payment.id)
        stored = await event_row(hook_services, evt["id"])
        assert stored is not None
        if n == 2:
            # Rolled back with the batch, then tried alone: one failed attempt, retried later.
            assert (row.status, stored.status, stored.attempts) == ("processing", "received", 1)
            assert "this one event breaks" in (stored.last_error or "")
        else:
            assert (row.status, stored.status, stored.attempts) == ("succeeded", "applied", 1)
            assert await succeeded_audits(hook_services, payment.id) == 1
    async with hook_services.db.transaction() as session:
        jobs = {
            job.unique_key: (job.status, job.attempts)
            for job in await session.scalars(
                select(Job).where(Job.kind == events_domain.APPLY_KIND)
            )
        }
    assert jobs[evts[2]["id"]] == ("ready", 1)
    assert {jobs[e["id"]] for n, e in enumerate(evts) if n != 2} == {("done", 1)}


async def test_a_batch_costs_a_few_statements_per_event(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    count = 20
    payments = [
        await seed_payment(hook_services, status="processing", pi_id=f"pi_set_{n}")
        for n in range(count)
    ]
    for n in range(count):
        evt = event("payment_intent.succeeded", intent_obj(f"pi_set_{n}", status="succeeded"))
        assert (await send(hook_client, evt)).status_code == 200
    with counting(hook_services) as seen:
        assert await run_apply_jobs(hook_services) == count
    # Before: about 10 per event (lock the event, lock the payment, read its refunds and its
    # receipt for the notification, insert the audit record, two jobs and the notification,
    # update the payment and the event). Now the batch locks, reads and writes each table once:
    # 11 a batch (one or two here), and the worker's claims and gauges. SQLite adds one per
    # audit record: its RETURNING cannot be matched to the rows of a multi-row INSERT, so
    # SQLAlchemy sends each alone.
    per_event = 2 if hook_services.db.dialect == "postgresql" else 3
    assert seen["statements"] <= per_event * count, seen
    async with hook_services.db.transaction() as session:
        jobs = (await session.scalars(select(Job).where(Job.kind != APPLY_KIND))).all()
        told = (await session.scalars(select(Notification))).all()
    receipts = sorted(j.unique_key or "" for j in jobs if j.kind == "receipt.issue")
    assert receipts == sorted(f"receipt:{p.id}" for p in payments)
    assert sorted((n.type, n.payment_id) for n in told) == sorted(
        ("payment.succeeded", p.id) for p in payments
    )
    assert all(n.data["status"] == "succeeded" and n.data["refunds"] == [] for n in told)
    deliveries = sorted(j.payload["id"] for j in jobs if j.kind == "notification.deliver")
    assert deliveries == sorted(n.id for n in told)
    for payment in payments:
        assert await succeeded_audits(hook_services, payment.id) == 1


async def test_a_notification_in_a_batch_carries_a_refund_applied_before_it(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    """The batch reads refunds once for all its payments; a refund event earlier in the same
    batch must still show in a later event's notification, as it does one event at a time."""
    payment = await seed_payment(
        hook_services, status="succeeded", pi_id="pi_batch_rf", charge_id="ch_batch_rf"
    )
    refund = refund_obj(
        "re_batch_rf", amount=500, status="succeeded", pi_id="pi_batch_rf", charge_id="ch_batch_rf"
    )
    evts = [
        event("charge.refunded", charge_obj("ch_batch_rf", pi_id="pi_batch_rf", refunds=[refund])),
        event(
            "charge.dispute.created",
            dispute_obj(
                "dp_batch_rf", status="needs_response", charge_id="ch_batch_rf", pi_id="pi_batch_rf"
            ),
        ),
    ]
    for evt in evts:
        assert (await send(hook_client, evt)).status_code == 200
    with counting(hook_services) as seen:
        assert await run_apply_jobs(hook_services) == 2
    assert seen["event_commits"] == 1, seen  # both in one batch
    async with hook_services.db.transaction() as session:
        told = (
            await session.scalars(
                select(Notification).where(Notification.type == "payment.disputed")
            )
        ).one()
    assert told.payment_id == payment.id
    assert [(r["id"], r["amount"]) for r in told.data["refunds"]] == [
        (told.data["refunds"][0]["id"], 500)
    ]
    assert told.data["amount_refunded"] == 500
    assert told.data["disputed"] is True
