"""Fixtures for the job queue: the test kinds' tables, in-process workers, worker processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import make_settings, server_env, services_fixture
from tests.jobs import kinds_for_tests

from azora_payments.config import Settings
from azora_payments.db.models import Job
from azora_payments.devstack.processes import ServiceProcess, start_worker
from azora_payments.jobs.registry import JobKind, registered_kinds
from azora_payments.jobs.worker import Worker, WorkerOptions
from azora_payments.services import Services

ROOT = Path(__file__).resolve().parents[2]
FAST = WorkerOptions(
    poll_seconds=0.05,
    lease_seconds=1.0,
    heartbeat_seconds=0.2,
    grace_seconds=5.0,
    recover_seconds=0.2,
)


@pytest.fixture
async def job_db(database_url: str) -> str:
    await kinds_for_tests.create_tables(database_url)
    return database_url


@pytest.fixture
def job_settings(job_db: str, tmp_path: Path) -> Settings:
    return make_settings(
        job_db, receipt_storage=str(tmp_path / "receipts"), worker_poll_seconds=0.05
    )


job_services = services_fixture("job_settings", name="job_services")


async def jobs_by_id(services: Services, *, all_kinds: bool = False) -> dict[int, Job]:
    """The jobs by id; only the test kinds' unless `all_kinds` (workers add `jobs.cleanup`)."""
    query = select(Job).order_by(Job.id)
    if not all_kinds:
        query = query.where(Job.kind.startswith("test."))
    async with services.db.transaction() as session:
        return {job.id: job for job in (await session.scalars(query)).all()}


async def run_until(
    worker: Worker,
    done: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 15.0,
) -> None:
    """Run `worker` in the background until `done()` holds, then stop it."""
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + timeout
        while not await done():
            if task.done():
                task.result()
                raise AssertionError("worker stopped early")
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


@pytest.fixture
def worker_process(
    job_settings: Settings, tmp_path: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    """Starts `azora-payments worker` processes (not waited for) with the test kinds only, so
    the service's own scheduled kinds stay out of the way; killed at the end."""
    started: list[ServiceProcess] = []

    def start(*args: str, **env: str) -> ServiceProcess:
        environment = server_env(
            job_settings,
            LOG_LEVEL="INFO",
            WORKER_POLL_SECONDS="0.05",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **env,
        )
        process = start_worker(
            environment,
            tmp_path / f"worker-{len(started)}.log",
            args=["--import", "tests.jobs.kinds_for_tests", "--kinds", "test.*", *args],
            wait=False,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def kinds_under_test() -> dict[str, JobKind]:
    return {name: kind for name, kind in registered_kinds().items() if name.startswith("test.")}


def fast_worker(
    services: Services, *, kinds: dict[str, JobKind] | None = None, **changes: Any
) -> Worker:
    """An in-process worker polling fast, for the test kinds only (unless `kinds` says)."""
    return Worker(
        services,
        options=replace(FAST, **changes),
        kinds=kinds_under_test() if kinds is None else kinds,
    )
