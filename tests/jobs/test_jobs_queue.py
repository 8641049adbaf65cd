"""The outbox, retries, time limits, scheduling and metrics, with in-process workers."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from tests.conftest import postgres_only
from tests.jobs import kinds_for_tests
from tests.jobs.conftest import fast_worker, jobs_by_id, run_until

import azora_payments.jobs as jobs_api
from azora_payments.db.models import Job
from azora_payments.db.repositories import jobs as jobs_repo
from azora_payments.db.types import utcnow
from azora_payments.jobs import UnknownJobKind, enqueue
from azora_payments.jobs.registry import JobKind, get_kind, import_kind_modules
from azora_payments.services import Services


def test_public_surface_is_pinned() -> None:
    assert sorted(jobs_api.__all__) == [
        "DuplicateJobKind",
        "Handler",
        "JobContext",
        "JobKind",
        "UnknownJobKind",
        "enqueue",
        "job_kind",
        "scheduled_job",
    ]


async def test_rolled_back_job_never_runs_and_committed_one_does(
    job_services: Services, job_db: str
) -> None:
    async def failing_request() -> None:
        async with job_services.db.transaction() as session:
            await enqueue(session, kind="test.record", payload={"n": 1})
            raise RuntimeError("request failed")

    with pytest.raises(RuntimeError, match="request failed"):
        await failing_request()
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"n": 2})

    await fast_worker(job_services, once=True).run()

    rows = await kinds_for_tests.run_rows(job_db)
    assert len(rows) == 1
    jobs = await jobs_by_id(job_services)
    assert [(job.payload, job.status, job.attempts) for job in jobs.values()] == [
        ({"n": 2}, "done", 1)
    ]
    assert rows[0]["job_id"] == next(iter(jobs))


@postgres_only  # SQLite has one writer: a worker waits for the open transaction instead
async def test_nothing_runs_before_the_commit(job_services: Services, job_db: str) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={})
        await session.flush()
        await fast_worker(job_services, once=True).run()
        assert await kinds_for_tests.run_rows(job_db) == []
    await fast_worker(job_services, once=True).run()
    assert len(await kinds_for_tests.run_rows(job_db)) == 1


async def test_unique_key_enqueues_once(job_services: Services) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"a": 1}, unique_key="receipt:pay_1")
        await enqueue(session, kind="test.record", payload={"a": 2}, unique_key="receipt:pay_1")
        await enqueue(session, kind="test.record", payload={}, unique_key="receipt:pay_2")
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"a": 3}, unique_key="receipt:pay_1")
    jobs = await jobs_by_id(job_services)
    assert sorted((job.unique_key or "", job.payload.get("a", 0)) for job in jobs.values()) == [
        ("receipt:pay_1", 1),
        ("receipt:pay_2", 0),
    ]


async def test_enqueue_takes_the_kinds_defaults_and_overrides(job_services: Services) -> None:
    later = utcnow() + timedelta(hours=1)
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={})
        await enqueue(session, kind="test.record", payload={}, run_at=later, max_attempts=2)
    first, second = (await jobs_by_id(job_services)).values()
    assert (first.max_attempts, first.status, first.attempts) == (5, "ready", 0)
    assert second.max_attempts == 2
    assert abs((second.run_at - later).total_seconds()) < 0.001


async def test_enqueue_refuses_unknown_kinds_and_bad_payloads(job_services: Services) -> None:
    async with job_services.db.transaction() as session:
        with pytest.raises(UnknownJobKind, match=r"no\.such\.kind"):
            await enqueue(session, kind="no.such.kind", payload={})
        with pytest.raises(TypeError):
            await enqueue(session, kind="test.record", payload={"when": utcnow()})
        with pytest.raises(ValueError, match="aware"):
            await enqueue(
                session, kind="test.record", payload={}, run_at=utcnow().replace(tzinfo=None)
            )


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    async def noop(*_: object) -> None:
        return None

    kind = JobKind("x", noop, backoff_base=2.0, backoff_cap=60.0)
    rng = random.Random(7)
    delays = [kind.retry_delay(attempt, rng=rng) for attempt in range(1, 10)]
    assert all(later > earlier for earlier, later in itertools.pairwise(delays[:6]))
    assert 1.5 <= delays[0] <= 2.0
    assert all(45.0 <= delay <= 60.0 for delay in delays[5:])
    assert kind.retry_delay(10_000, rng=rng) <= 60.0


async def test_failing_twice_then_succeeding_runs_three_times_with_growing_delays(
    job_services: Services, job_db: str
) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"fail_times": 2})

    async def effect_done() -> bool:
        return await kinds_for_tests.effect_count(job_db) == 1

    await run_until(fast_worker(job_services), effect_done)

    rows = await kinds_for_tests.run_rows(job_db)
    assert [row["attempt"] for row in rows] == [1, 2, 3]
    planned = [row["scheduled_for"] for row in rows]
    gaps = [later - earlier for earlier, later in itertools.pairwise(planned)]
    base = get_kind("test.record").backoff_base
    assert gaps[0] >= base * 0.75
    assert gaps[1] > gaps[0]
    (job,) = (await jobs_by_id(job_services)).values()
    assert (job.status, job.attempts) == ("done", 3)
    # The last failure is kept, scrubbed of the e-mail address its message carried.
    assert job.last_error is not None
    assert job.last_error.splitlines()[0] == "RuntimeError: planned failure 2 for [email]"


async def test_a_time_limit_is_a_failure_and_the_last_one_makes_it_dead(
    job_services: Services, job_db: str
) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.quick_timeout", payload={"sleep": 30})

    async def dead() -> bool:
        return [job.status for job in (await jobs_by_id(job_services)).values()] == ["dead"]

    before = REGISTRY.get_sample_value(
        "azora_job_runs_total", {"kind": "test.quick_timeout", "outcome": "timed_out"}
    )
    await run_until(fast_worker(job_services), dead)
    (job,) = (await jobs_by_id(job_services)).values()
    assert job.attempts == 2
    assert job.finished_at is not None
    assert (job.last_error or "").startswith("timed out after 0.3s")
    assert len(await kinds_for_tests.run_rows(job_db)) == 2
    after = REGISTRY.get_sample_value(
        "azora_job_runs_total", {"kind": "test.quick_timeout", "outcome": "timed_out"}
    )
    assert (after or 0) - (before or 0) == 1


async def test_gauges_show_depth_oldest_age_and_dead(job_services: Services) -> None:
    old = utcnow() - timedelta(seconds=120)
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={}, run_at=old)
        await enqueue(session, kind="test.record", payload={}, run_at=utcnow() + timedelta(1))
        session.add(Job(kind="test.quick_timeout", payload={}, status="dead", attempts=2))
    worker = fast_worker(job_services, kinds={})
    await worker._refresh_gauges({"test.record": get_kind("test.record")})
    assert REGISTRY.get_sample_value("azora_job_queue_depth", {"kind": "test.record"}) == 2
    assert REGISTRY.get_sample_value("azora_jobs_dead", {"kind": "test.quick_timeout"}) == 1
    age = REGISTRY.get_sample_value("azora_job_oldest_ready_age_seconds")
    assert age is not None
    assert 119 <= age < 600


def leased(*, attempts: int, by: str, until: datetime) -> Job:
    """A running test job of 3 attempts at most, leased to worker `by` until `until`."""
    return Job(
        kind="test.record",
        payload={},
        status="running",
        attempts=attempts,
        max_attempts=3,
        locked_by=by,
        locked_until=until,
    )


async def test_lost_lease_is_taken_again_and_the_last_attempt_dies(
    job_services: Services,
) -> None:
    past = utcnow() - timedelta(seconds=5)
    async with job_services.db.transaction() as session:
        session.add_all(
            [
                leased(attempts=1, by="gone", until=past),
                leased(attempts=3, by="gone", until=past),
                leased(attempts=1, by="alive", until=utcnow() + timedelta(1)),
            ]
        )
    await fast_worker(job_services)._recover({})
    jobs = list((await jobs_by_id(job_services)).values())
    assert [(job.status, job.locked_by) for job in jobs] == [
        ("ready", None),
        ("dead", None),
        ("running", "alive"),
    ]
    assert (jobs[1].last_error or "").startswith("lease expired")


async def test_a_late_outcome_of_a_lost_lease_is_dropped(job_services: Services) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={})
    now = utcnow()
    leases = {"test.record": timedelta(seconds=-1)}
    async with job_services.db.transaction() as session:
        (first,) = await jobs_repo.claim(session, leases=leases, worker_id="a", now=now, limit=5)
    async with job_services.db.transaction() as session:
        await jobs_repo.recover_expired(session, now=utcnow())
        (second,) = await jobs_repo.claim(
            session, leases=leases, worker_id="b", now=utcnow(), limit=5
        )
    assert (first.id, first.attempts, second.attempts) == (second.id, 1, 2)
    async with job_services.db.transaction() as session:
        assert not await jobs_repo.mark_done(
            session, job_id=first.id, worker_id="a", attempt=1, now=utcnow()
        )
        assert await jobs_repo.mark_done(
            session, job_id=second.id, worker_id="b", attempt=2, now=utcnow()
        )


async def test_cleanup_deletes_done_jobs_older_than_a_week(job_services: Services) -> None:
    import_kind_modules()
    now = utcnow()
    async with job_services.db.transaction() as session:
        for age_days, status in ((8, "done"), (6, "done"), (30, "dead"), (30, "ready")):
            at = now - timedelta(days=age_days)
            session.add(
                Job(kind="test.record", payload={}, status=status, finished_at=at, run_at=at)
            )
    await fast_worker(
        job_services, once=True, kinds={"jobs.cleanup": get_kind("jobs.cleanup")}
    ).run()
    jobs = list((await jobs_by_id(job_services, all_kinds=True)).values())
    left = sorted(
        (job.status, round((now - job.run_at).total_seconds() / 86400))
        for job in jobs
        if job.kind == "test.record"
    )
    assert left == [("dead", 30), ("done", 6), ("ready", 30)]
    (schedule,) = [job for job in jobs if job.kind == "jobs.cleanup"]
    # Re-armed for its next hourly slot rather than finished.
    assert schedule.status == "ready"
    assert schedule.unique_key == "schedule:jobs.cleanup"
    assert schedule.attempts == 0
    assert now < schedule.run_at <= now + timedelta(hours=1)


async def test_forced_stop_releases_the_job_in_hand(job_services: Services, job_db: str) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"sleep": 30})

    async def running() -> bool:
        return len(await kinds_for_tests.run_rows(job_db)) == 1

    worker = fast_worker(job_services, grace_seconds=0.2)
    await run_until(worker, running)
    (job,) = (await jobs_by_id(job_services)).values()
    assert (job.status, job.attempts, job.locked_by) == ("ready", 0, None)


async def test_a_unique_job_rolls_back_with_its_transaction(job_services: Services) -> None:
    # The dialect's INSERT … ON CONFLICT runs at once, but inside the caller's transaction.
    async def failing_request() -> None:
        async with job_services.db.transaction() as session:
            await enqueue(session, kind="test.record", payload={}, unique_key="k")
            raise RuntimeError("request failed")

    with pytest.raises(RuntimeError, match="request failed"):
        await failing_request()
    async with job_services.db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
        await enqueue(session, kind="test.record", payload={}, unique_key="k")
    assert len(await jobs_by_id(job_services)) == 1


async def test_kind_modules_come_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZORA_JOB_MODULES", "tests.jobs.kinds_for_tests, json")
    imported = import_kind_modules(["tests.jobs.kinds_for_tests"])
    assert imported == ["azora_payments.jobs.kinds", "tests.jobs.kinds_for_tests", "json"]
    assert get_kind("jobs.cleanup").every == timedelta(hours=1)
