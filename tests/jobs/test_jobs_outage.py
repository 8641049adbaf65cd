"""A database outage longer than a lease: no heartbeat can be written, yet a live worker's job
is not taken from it, and it runs once (a private PostgreSQL, stopped hard and restarted)."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.conftest import make_settings, open_services
from tests.jobs import kinds_for_tests
from tests.jobs.conftest import jobs_by_id
from tests.private_services import PrivatePostgres

from azora_payments.jobs import enqueue
from azora_payments.jobs.registry import get_kind
from azora_payments.jobs.worker import Worker, WorkerOptions

pytestmark = pytest.mark.postgres

# The owner renews at most every second while the database is away; the other worker looks
# for expired leases every 50 ms.
OWNER = WorkerOptions(poll_seconds=0.05, lease_seconds=2.0, heartbeat_seconds=1.5)
OTHER = WorkerOptions(
    poll_seconds=0.05, lease_seconds=2.0, heartbeat_seconds=1.5, recover_seconds=0.05
)


async def test_a_live_worker_keeps_its_job_through_an_outage_longer_than_the_lease(
    private_postgres: PrivatePostgres, private_database_url: str
) -> None:
    await kinds_for_tests.create_tables(private_database_url)
    settings = make_settings(private_database_url)
    kinds = {"test.record": get_kind("test.record")}
    async with open_services(settings) as one, open_services(settings) as two:
        async with one.db.transaction() as session:
            await enqueue(session, kind="test.record", payload={"sleep": 8})
        first = Worker(one, options=OWNER, kinds=kinds)
        second = Worker(two, options=OTHER, kinds=kinds)
        tasks = [asyncio.create_task(first.run())]
        try:
            deadline = time.monotonic() + 30
            while not await kinds_for_tests.run_rows(private_database_url):
                assert time.monotonic() < deadline, "the job did not start"
                await asyncio.sleep(0.1)
            await asyncio.to_thread(private_postgres.stop, "immediate")
            await asyncio.sleep(OWNER.lease_seconds * 2)  # every lease has run out
            await asyncio.to_thread(private_postgres.start)
            # A worker that starts as the database comes back finds the lease expired, before
            # the owner could renew it.
            tasks.append(asyncio.create_task(second.run()))

            async def finished() -> bool:
                try:
                    jobs = await jobs_by_id(two)
                except Exception:
                    return False
                return [job.status for job in jobs.values()] == ["done"]

            deadline = time.monotonic() + 60
            while not await finished():
                assert time.monotonic() < deadline, "the job did not finish"
                await asyncio.sleep(0.2)
        finally:
            first.stop()
            second.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        rows = await kinds_for_tests.run_rows(private_database_url)
        (job,) = (await jobs_by_id(one)).values()
    assert [row["attempt"] for row in rows] == [1], "the live worker's job was taken from it"
    assert job.attempts == 1
