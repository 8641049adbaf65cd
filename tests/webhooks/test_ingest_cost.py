"""What one delivery costs the database on PostgreSQL: one statement sent by the driver, event
and job together, with no ORM session and no SQLAlchemy statement on the way (the ingest's
profile: those were most of its CPU). Counted, not timed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import fastapi.routing as fastapi_routing
import httpx
import limits.util as limits_util
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from azora_payments.db.models import Job
from azora_payments.db.repositories import events as events_repo
from azora_payments.db.session import Database
from azora_payments.domain import events as events_domain
from azora_payments.services import Services
from tests.conftest import postgres_only
from tests.webhooks.conftest import event, event_row, intent_obj, run_apply_jobs, seed_payment, send


class _CountingConnection:
    """The driver connection, noting each statement it is given."""

    def __init__(self, connection: Any, sent: list[str]) -> None:
        self._connection = connection
        self._sent = sent

    async def fetchval(self, query: str, *args: Any) -> Any:
        self._sent.append(query)
        return await self._connection.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> Any:
        self._sent.append(query)
        return await self._connection.execute(query, *args)


@contextmanager
def counting(services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Within the block: the statements the driver was given directly (`driver`), those sent
    through SQLAlchemy (`sqlalchemy`), and the ORM sessions that began a transaction."""
    seen: dict[str, Any] = {"driver": [], "sqlalchemy": 0, "sessions": 0}
    engine = services.db.engine.sync_engine
    # (Looked up softly: on the code before, which had no such path, the counts tell.)
    real = getattr(Database, "driver_statement", None)

    @asynccontextmanager
    async def driver_statement(self: Database) -> AsyncIterator[Any]:
        assert real is not None
        async with real(self) as connection:
            yield _CountingConnection(connection, seen["driver"])

    def on_statement(*_: Any) -> None:
        seen["sqlalchemy"] += 1

    def on_begin(*_: Any) -> None:
        seen["sessions"] += 1

    monkeypatch.setattr(Database, "driver_statement", driver_statement, raising=False)
    sa_event.listen(engine, "before_cursor_execute", on_statement)
    sa_event.listen(Session, "after_begin", on_begin)
    try:
        yield seen
    finally:
        sa_event.remove(engine, "before_cursor_execute", on_statement)
        sa_event.remove(Session, "after_begin", on_begin)
        monkeypatch.undo()


@postgres_only  # SQLite writes the event and its job in a transaction of two, through the ORM
async def test_a_delivery_is_one_driver_statement_and_no_orm_session(
    hook_client: httpx.AsyncClient, hook_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_payment(hook_services, status="processing", pi_id="pi_one_statement")
    evt = event("payment_intent.succeeded", intent_obj("pi_one_statement", status="succeeded"))
    with counting(hook_services, monkeypatch) as seen:
        assert (await send(hook_client, evt)).status_code == 200
        assert (await send(hook_client, evt)).status_code == 200  # a redelivery
    # Before: one statement each, but through an ORM session and SQLAlchemy's statement layer.
    # The workers' wake-up (a NOTIFY from its own task) may or may not have run by now.
    recording = [q for q in seen["driver"] if "pg_notify" not in q]
    assert len(recording) == 2, seen
    assert all(q.lstrip().startswith("WITH recorded AS") for q in recording), seen
    assert (seen["sqlalchemy"], seen["sessions"]) == (0, 0), seen
    stored = await event_row(hook_services, evt["id"])
    assert stored is not None
    assert stored.payload == evt
    assert (stored.type, stored.status, stored.attempts, stored.source) == (
        "payment_intent.succeeded",
        "received",
        0,
        "webhook",
    )
    assert stored.object_id == "pi_one_statement"
    assert stored.received_at.tzinfo is not None
    async with hook_services.db.transaction() as session:
        job = (await session.scalars(select(Job).where(Job.unique_key == evt["id"]))).one()
    assert (job.kind, job.payload, job.status, job.attempts, job.max_attempts) == (
        events_domain.APPLY_KIND,
        {"event_id": evt["id"]},
        "ready",
        0,
        15,
    )
    assert job.run_at == stored.received_at
    await run_apply_jobs(hook_services)
    stored = await event_row(hook_services, evt["id"])
    assert stored is not None
    assert stored.status == "applied"


async def test_a_delivery_is_answered_without_fastapi_dependency_solving(
    hook_client: httpx.AsyncClient, hook_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    solved: list[str] = []
    real = fastapi_routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi_routing, "solve_dependencies", counted)
    evt = event("payment_intent.succeeded", intent_obj("pi_plain_route", status="succeeded"))
    answer = await send(hook_client, evt)
    assert (answer.status_code, answer.json()) == (200, {"received": True})
    assert answer.headers["content-type"] == "application/json"
    # Before: one dependency solve (the services) per delivery, and FastAPI's response model.
    assert solved == []
    assert await event_row(hook_services, evt["id"]) is not None
    # The documented route still serves everything else (the check is not vacuous).
    assert (await hook_client.get("/healthz")).status_code == 200
    assert solved == ["/healthz"]


async def test_the_failure_limit_is_not_parsed_again_for_each_delivery(
    hook_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real = limits_util.parse_many

    def counted(limit_string: str) -> Any:
        parsed.append(limit_string)
        return real(limit_string)

    evt = event("payment_intent.succeeded", intent_obj("pi_parse_once", status="succeeded"))
    assert (await send(hook_client, evt)).status_code == 200  # the first may parse it
    monkeypatch.setattr(limits_util, "parse_many", counted)
    for n in range(3):
        evt = event("payment_intent.succeeded", intent_obj(f"pi_parse_{n}", status="succeeded"))
        assert (await send(hook_client, evt)).status_code == 200
    # Before: `RATE_LIMIT_WEBHOOK_FAILURES` parsed on every delivery, about 1 % of its CPU.
    assert parsed == []


@postgres_only  # the driver path is PostgreSQL's
async def test_a_connection_whose_statement_failed_is_not_handed_out_again(
    hook_client: httpx.AsyncClient, hook_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[Any] = []
    real = events_repo.record_with_job

    async def failing(connection: Any, *args: Any, **kwargs: Any) -> bool:
        used.append(connection)
        raise RuntimeError("the statement broke midway")

    async def noting(connection: Any, *args: Any, **kwargs: Any) -> bool:
        used.append(connection)
        return await real(connection, *args, **kwargs)

    monkeypatch.setattr(events_repo, "record_with_job", failing)
    evt = event("payment_intent.succeeded", intent_obj("pi_broken_conn", status="succeeded"))
    assert (await send(hook_client, evt)).status_code == 500
    monkeypatch.setattr(events_repo, "record_with_job", noting)
    assert (await send(hook_client, evt)).status_code == 200  # Stripe's redelivery
    broken, next_one = used
    # Before: returned to the pool as it was, open, to be handed out again.
    assert broken.is_closed()
    assert next_one is not broken
    assert await event_row(hook_services, evt["id"]) is not None
    # Every connection back in the pool: the workers' NOTIFY, sent by a task of its own just
    # after the 200, may hold one for a moment.
    pool: Any = hook_services.db.engine.pool
    deadline = time.monotonic() + 5.0
    while pool.checkedout() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert pool.checkedout() == 0
