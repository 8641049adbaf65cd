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

from azora_payments.db.models import AuditRecord, Job, Payment
from azora_payments.domain import events as events_domain
from azora_payments.services import Services
from tests.webhooks.conftest import (
    event,
    event_row,
    intent_obj,
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


async def test_a_delivery_is_recorded_in_one_statement_on_postgres(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> None:
    if hook_services.db.dialect != "postgresql":
        pytest.skip("one statement with its job is PostgreSQL's (SQLite: a transaction of two)")
    await seed_payment(hook_services, status="processing", pi_id="pi_one_statement")
    evt = event("payment_intent.succeeded", intent_obj("pi_one_statement", status="succeeded"))
    with counting(hook_services) as seen:
        assert (await send(hook_client, evt)).status_code == 200
        assert (await send(hook_client, evt)).status_code == 200  # a redelivery
    # Before: the event's INSERT, then the job's, in a transaction; the duplicate's INSERT.
    assert seen["statements"] == 2, seen
    stored = await event_row(hook_services, evt["id"])
    assert stored is not None
    assert stored.payload == evt
    async with hook_services.db.transaction() as session:
        job = (await session.scalars(select(Job).where(Job.unique_key == evt["id"]))).one()
    assert (job.kind, job.payload, job.status, job.attempts) == (
        events_domain.APPLY_KIND,
        {"event_id": evt["id"]},
        "ready",
        0,
    )
    assert job.max_attempts == 15
    await run_apply_jobs(hook_services)
    stored = await event_row(hook_services, evt["id"])
    assert stored is not None
    assert stored.status == "applied"
