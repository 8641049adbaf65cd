"""The heartbeat: it keeps a long job's short lease, and stops an attempt whose job another
worker has taken (its outcome would be dropped anyway)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import update
from tests.jobs import kinds_for_tests
from tests.jobs.conftest import fast_worker, jobs_by_id

from azora_payments.db.models import Job
from azora_payments.jobs import enqueue
from azora_payments.jobs.worker import WorkerOptions
from azora_payments.services import Services


async def _started(job_db: str) -> None:
    deadline = time.monotonic() + 20
    while not await kinds_for_tests.run_rows(job_db):
        assert time.monotonic() < deadline, "the job did not start"
        await asyncio.sleep(0.05)


async def test_the_heartbeat_keeps_a_job_longer_than_its_lease(
    job_services: Services, job_db: str
) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"sleep": 1.5})
    worker = fast_worker(job_services, lease_seconds=0.6, heartbeat_seconds=0.15, once=True)
    await asyncio.wait_for(worker.run(), 30)
    (job,) = (await jobs_by_id(job_services)).values()
    assert (job.status, job.attempts) == ("done", 1)
    assert [row["attempt"] for row in await kinds_for_tests.run_rows(job_db)] == [1]


async def test_an_attempt_whose_job_was_taken_is_stopped(
    job_services: Services, job_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"sleep": 30})
    worker = fast_worker(job_services, lease_seconds=5.0, heartbeat_seconds=0.2)
    task = asyncio.create_task(worker.run())
    try:
        await _started(job_db)
        async with job_services.db.transaction() as session:
            await session.execute(update(Job).values(locked_by="another-worker"))
        with caplog.at_level(logging.WARNING, logger="azora_payments.jobs.worker"):
            deadline = time.monotonic() + 10
            while not any("lease lost" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the attempt was not stopped"
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
    (job,) = (await jobs_by_id(job_services)).values()
    # Left to its new owner: neither finished nor released by the old one.
    assert (job.status, job.locked_by) == ("running", "another-worker")


def test_the_heartbeat_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        WorkerOptions(lease_seconds=5, heartbeat_seconds=5)
