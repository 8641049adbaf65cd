"""Liveness, readiness, metrics and the offline docs."""

from __future__ import annotations

import httpx

from azora_payments.services import Services


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_database_and_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "not_configured"}


async def test_docs_served_without_internet(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in page.text
        served = await client.get(f"/static-offline-docs/{asset}")
        assert served.status_code == 200
        assert len(served.content) > 10_000


async def test_metrics_report_the_queue_from_the_database(
    client: httpx.AsyncClient, services: Services
) -> None:
    from azora_payments.jobs import enqueue

    async with services.db.transaction() as session:
        await enqueue(session, kind="jobs.cleanup", payload={})
    body = (await client.get("/metrics")).text
    assert 'azora_job_queue_depth{kind="jobs.cleanup"} 1.0' in body
    assert "azora_job_oldest_ready_age_seconds" in body


async def test_metrics_report_the_webhook_backlog_from_the_database(
    client: httpx.AsyncClient, services: Services
) -> None:
    from datetime import timedelta

    from azora_payments.db.models import WebhookEvent
    from azora_payments.db.types import utcnow

    now = utcnow()
    async with services.db.transaction() as session:
        for n, (status, age) in enumerate([("parked", 10), ("received", 120), ("applied", 900)]):
            session.add(
                WebhookEvent(
                    id=f"evt_backlog_{n}",
                    type="payment_intent.succeeded",
                    stripe_created=now,
                    payload={},
                    status=status,
                    received_at=now - timedelta(seconds=age),
                )
            )
    body = (await client.get("/metrics")).text
    assert "azora_webhook_events_parked 1.0" in body
    (lag,) = [
        line for line in body.splitlines() if line.startswith("azora_webhook_oldest_unapplied")
    ]
    assert 119 <= float(lag.split()[-1]) < 300
