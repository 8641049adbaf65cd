"""Real `azora-payments worker` and `jobs` processes: sharing the queue, dying, stopping."""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import func, insert, select
from tests.conftest import server_env
from tests.jobs import kinds_for_tests
from tests.jobs.conftest import jobs_by_id

from azora_payments.config import Settings
from azora_payments.db.models import Job
from azora_payments.db.types import utcnow
from azora_payments.devstack.processes import ServiceProcess, run_command
from azora_payments.jobs import enqueue
from azora_payments.jobs.commands import retry_jobs
from azora_payments.services import Services

StartWorker = Callable[..., ServiceProcess]


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def test_workers_run_each_of_1000_jobs_exactly_once(
    job_services: Services, worker_process: StartWorker, tmp_path: Path
) -> None:
    # Three workers share PostgreSQL through SKIP LOCKED; SQLite has one worker.
    count = 3 if job_services.db.dialect == "postgresql" else 1
    workers = [worker_process("--concurrency", "16") for _ in range(count)]
    for worker in workers:
        worker.wait_started()
    effects = tmp_path / "effects.txt"
    now = utcnow()
    async with job_services.db.transaction() as session:
        # All at once, so that every worker is claiming from the same rows at the same time.
        await session.execute(
            insert(Job),
            [
                {
                    "kind": "test.append",
                    "payload": {"path": str(effects)},
                    "status": "ready",
                    "attempts": 0,
                    "max_attempts": 3,
                    "run_at": now,
                }
                for _ in range(1000)
            ],
        )

    async def all_done() -> bool:
        async with job_services.db.transaction() as session:
            waiting = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.kind == "test.append", Job.status != "done")
            )
        return waiting == 0

    await wait_for(all_done, timeout=60)
    for worker in workers:
        assert worker.stop() == 0, worker.output()

    lines = [line.split() for line in effects.read_text().splitlines()]
    jobs = await jobs_by_id(job_services)
    assert len(jobs) == 1000
    assert len(lines) == 1000, "a job ran twice" if len(lines) > 1000 else "a job did not run"
    assert sorted(int(job_id) for job_id, _ in lines) == sorted(jobs)
    assert {job.attempts for job in jobs.values()} == {1}
    pids = {int(pid) for _, pid in lines}
    assert pids <= {worker.pid for worker in workers}


async def test_a_killed_worker_s_job_runs_again_after_its_lease_not_its_timeout(
    job_services: Services, job_db: str, worker_process: StartWorker
) -> None:
    async with job_services.db.transaction() as session:
        # The first attempt makes its effect, then hangs until the worker is killed: the
        # classic "done but never acknowledged" case. Its kind may run for 10 s.
        await enqueue(session, kind="test.record", payload={"sleep": 60, "sleep_attempts": [1]})
    # Two workers: the one that takes the job is killed, the other takes it again. A lease of
    # 2 s renewed every 0.5 s: the job is taken again 1.5 to 2 s after the kill.
    workers = [worker_process("--lease", "2", "--heartbeat", "0.5") for _ in range(2)]

    async def started() -> bool:
        return len(await kinds_for_tests.run_rows(job_db)) == 1

    await wait_for(started)
    (first_run,) = await kinds_for_tests.run_rows(job_db)
    (first,) = [w for w in workers if w.pid == first_run["pid"]]
    (second,) = [w for w in workers if w is not first]
    await asyncio.sleep(2.5)  # longer than the lease: the heartbeat keeps it
    assert len(await kinds_for_tests.run_rows(job_db)) == 1
    first.kill()
    killed_at = time.time()
    (job,) = (await jobs_by_id(job_services)).values()
    assert (job.status, job.attempts) == ("running", 1)

    async def done() -> bool:
        return [j.status for j in (await jobs_by_id(job_services)).values()] == ["done"]

    await wait_for(done)
    assert second.stop() == 0, second.output()
    rows = await kinds_for_tests.run_rows(job_db)
    assert [row["attempt"] for row in rows] == [1, 2]
    assert rows[0]["pid"] == first.pid
    assert rows[1]["pid"] == second.pid
    # Not before the lease ran out, and long before the kind's 10 s time limit.
    assert 1.4 <= rows[1]["at"] - killed_at < 8.0, rows[1]["at"] - killed_at
    assert await kinds_for_tests.effect_count(job_db) == 1
    (job,) = (await jobs_by_id(job_services)).values()
    assert job.attempts == 2
    assert '"lease expired' not in first.output()


async def test_a_scheduled_job_runs_once_per_slot_across_two_workers(
    job_services: Services, job_db: str, worker_process: StartWorker
) -> None:
    # The first worker runs slots while the second starts (seconds on a loaded machine): the
    # upper bound counts from the launch, the lower one only while both ran.
    launched = time.time()
    workers = [worker_process(AZORA_TEST_TICK_SECONDS="0.5") for _ in range(2)]
    for worker in workers:
        worker.wait_started()
    started = time.time()
    await asyncio.sleep(2.5)
    running = time.time() - started
    for worker in workers:
        assert worker.stop() == 0, worker.output()
    elapsed = time.time() - launched

    rows = await kinds_for_tests.run_rows(job_db, kind="test.tick")
    slots = [row["scheduled_for"] for row in rows]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    assert all((slot * 2) == int(slot * 2) for slot in slots), "slots are on half seconds"
    # Every slot while both ran (~5, plus the one due at start, ±1); slots may also run while
    # they start and stop, which a loaded machine stretches: that only widens the upper bound.
    assert int(running / 0.5) - 1 <= len(slots) <= int(elapsed / 0.5) + 2
    assert {row["job_id"] for row in rows} == {rows[0]["job_id"]}, "one row per scheduled kind"


async def test_sigterm_lets_the_job_in_hand_finish_and_exits_0(
    job_services: Services, job_db: str, worker_process: StartWorker
) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"sleep": 0.8})
    worker = worker_process()

    async def running() -> bool:
        return len(await kinds_for_tests.run_rows(job_db)) == 1

    await wait_for(running)
    assert worker.stop() == 0, worker.output()
    (job,) = (await jobs_by_id(job_services)).values()
    assert (job.status, job.attempts) == ("done", 1)
    assert len(await kinds_for_tests.run_rows(job_db)) == 1


async def test_sigterm_releases_a_job_that_outlasts_the_grace_period(
    job_services: Services, job_db: str, worker_process: StartWorker
) -> None:
    async with job_services.db.transaction() as session:
        await enqueue(session, kind="test.record", payload={"sleep": 60})
    worker = worker_process("--grace", "0.3")

    async def running() -> bool:
        return len(await kinds_for_tests.run_rows(job_db)) == 1

    await wait_for(running)
    assert worker.stop() == 0, worker.output()
    (job,) = (await jobs_by_id(job_services)).values()
    assert (job.status, job.attempts, job.locked_by) == ("ready", 0, None)
    assert "job released unfinished" in worker.output()


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_command(args, server_env(settings))


async def test_dead_jobs_are_listed_and_retried_by_the_commands(
    job_services: Services, job_settings: Settings
) -> None:
    from tests.jobs.conftest import fast_worker

    async with job_services.db.transaction() as session:
        for n in range(3):
            await enqueue(
                session, kind="test.record", payload={"fail_times": 9, "n": n}, max_attempts=1
            )
        await enqueue(session, kind="test.record", payload={})
    await fast_worker(job_services, once=True).run()
    ids = sorted(i for i, job in (await jobs_by_id(job_services)).items() if job.status == "dead")
    assert len(ids) == 3

    listing = await asyncio.to_thread(cli, job_settings, "jobs", "list", "--status", "dead")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["id", "kind", "status", "attempts", "updated_at", "last_error"]
    assert sorted(int(line.split()[0]) for line in lines[1:4]) == ids
    for line in lines[1:4]:
        assert line.split()[1:4] == ["test.record", "dead", "1/1"]
        assert line.endswith("RuntimeError: planned failure 1 for [email]")
    assert lines[4] == "(3 jobs)"

    one = await asyncio.to_thread(cli, job_settings, "jobs", "retry", str(ids[0]))
    assert one.returncode == 0, one.stderr
    assert f"job {ids[0]}: ready" in one.stdout
    rest = await asyncio.to_thread(cli, job_settings, "jobs", "retry", "--all-dead")
    assert rest.returncode == 0, rest.stderr
    assert "2 jobs retried" in rest.stdout
    again = io.StringIO()
    code = await asyncio.to_thread(
        retry_jobs, job_settings, job_ids=[ids[0]], all_dead=False, kind=None, err=again
    )
    assert code == 1
    assert "is not dead" in again.getvalue()

    jobs = await jobs_by_id(job_services)
    assert [(jobs[i].status, jobs[i].attempts) for i in ids] == [("ready", 0)] * 3
    assert all(jobs[i].last_error for i in ids), "the last error is kept for the record"
