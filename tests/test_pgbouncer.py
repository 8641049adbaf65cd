"""Through PgBouncer in transaction mode (Debian's 1.18: no prepared statements kept across
server connections), with DATABASE_POOLER=pgbouncer: payments, webhooks and the job queue's
locking, many clients multiplexed over three server connections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from azora_payments.db.models import Job, WebhookEvent
from azora_payments.jobs import enqueue
from azora_payments.jobs.registry import get_kind
from azora_payments.jobs.worker import Worker, WorkerOptions
from tests.conftest import (
    _truncate,
    asgi_client,
    bearer,
    emulator_settings,
    make_settings,
    make_token,
    open_services,
)
from tests.jobs import kinds_for_tests
from tests.private_services import PgBouncer
from tests.test_payments import payment_body
from tests.webhooks.conftest import run_apply_jobs, send

pytestmark = pytest.mark.postgres


@pytest.fixture
def pgbouncer_url(pg_template_url: str) -> Iterator[str]:
    asyncio.run(_truncate(pg_template_url))
    bouncer = PgBouncer(pg_template_url, pool_size=3)
    bouncer.start()
    try:
        yield bouncer.url
    finally:
        bouncer.stop()


async def test_payments_and_webhooks_through_pgbouncer(
    pgbouncer_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    settings = emulator_settings(
        pgbouncer_url, tmp_path, stripe_emulator, database_pooler="pgbouncer"
    )
    headers = bearer(make_token(f"user_{uuid.uuid4().hex[:8]}"))
    # Without the setting this does not fail fast: asyncpg's statements collide on the shared
    # server connections ("prepared statement … already exists") and requests wait and retry.
    async with (
        asyncio.timeout(180),
        open_services(settings) as services,
        asgi_client(settings, services) as http,
    ):

        async def pay(key: str) -> httpx.Response:
            return await http.post(
                "/api/payments/process",
                json=payment_body(),
                headers={**headers, "Idempotency-Key": key},
            )

        keys = [uuid.uuid4().hex for _ in range(12)]
        answers = await asyncio.gather(*(pay(key) for key in keys))
        assert [a.status_code for a in answers] == [201] * 12, [a.text for a in answers]
        again = await pay(keys[0])
        assert again.json()["id"] == answers[0].json()["id"]
        history = await http.get("/api/payments/history", headers=headers)
        assert history.status_code == 200
        assert len(history.json()["data"]) == 12

        # Stripe's own events for those payments, delivered signed and applied by the queue.
        async with httpx.AsyncClient() as stripe_http:
            events = (
                await stripe_http.get(
                    f"{stripe_emulator}/v1/events?limit=10",
                    headers={"Authorization": f"Bearer {settings.stripe_secret_key}"},
                )
            ).json()["data"]
        for event in events:
            assert (await send(http, event)).status_code == 200
        await run_apply_jobs(services)
        async with services.db.read() as session:
            statuses = (
                await session.scalars(
                    select(WebhookEvent.status).where(
                        WebhookEvent.id.in_([e["id"] for e in events])
                    )
                )
            ).all()
    assert len(statuses) == len(events)
    assert set(statuses) <= {"applied", "ignored"}


async def test_the_job_queue_s_locking_through_pgbouncer(
    pgbouncer_url: str, tmp_path: Path
) -> None:
    await kinds_for_tests.create_tables(pgbouncer_url)
    settings = make_settings(pgbouncer_url, database_pooler="pgbouncer")
    effects = tmp_path / "effects.txt"
    kinds = {"test.append": get_kind("test.append")}
    options = WorkerOptions(once=True, poll_seconds=0.02, concurrency=8, batch_size=8)
    async with open_services(settings) as one, open_services(settings) as two:
        async with one.db.transaction() as session:
            for _ in range(150):
                await enqueue(session, kind="test.append", payload={"path": str(effects)})
        workers = [
            Worker(one, options=options, kinds=kinds),
            Worker(two, options=options, kinds=kinds),
        ]
        await asyncio.gather(*(worker.run() for worker in workers))
        async with one.db.read() as session:
            left = await session.scalar(
                select(func.count()).select_from(Job).where(Job.status != "done")
            )
    ids = [line.split()[0] for line in effects.read_text().splitlines()]
    assert left == 0
    assert len(ids) == 150, "a job ran twice" if len(ids) > 150 else "a job did not run"
    assert len(set(ids)) == 150
    assert sum(worker.runs for worker in workers) == 150
