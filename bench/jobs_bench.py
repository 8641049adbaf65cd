"""Job queue figures on PostgreSQL: jobs per second through two worker processes for a no-op
handler, and what `enqueue` adds to a request-sized transaction. Prints figures; asserts nothing.

    .venv/bin/python bench/jobs_bench.py [--jobs 20000] [--workers 2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, insert, select

from azora_payments.db.migrate import upgrade
from azora_payments.db.models import AuditRecord, Job
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.devstack.processes import running_workers
from azora_payments.jobs import enqueue

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

sys.path.insert(0, str(HERE))
import jobs_bench_kinds  # noqa: E402,F401  (registers bench.noop for enqueue's check)
from machine import ADMIN_URL, admin  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fill(db: Database, count: int) -> None:
    now = utcnow()
    for start in range(0, count, 5000):
        async with db.transaction() as session:
            await session.execute(
                insert(Job),
                [
                    {
                        "kind": "bench.noop",
                        "payload": {"n": n},
                        "status": "ready",
                        "attempts": 0,
                        "max_attempts": 3,
                        "run_at": now,
                    }
                    for n in range(start, min(count, start + 5000))
                ],
            )


async def done_count(db: Database) -> int:
    async with db.transaction() as session:
        value = await session.scalar(
            select(func.count()).select_from(Job).where(Job.status == "done")
        )
    return int(value or 0)


def worker_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "AZORA_ENV": "dev",
        "DATABASE_URL": url,
        "LOG_LEVEL": "INFO",
        "WORKER_POLL_SECONDS": "0.05",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }


async def throughput(url: str, *, jobs: int, workers: int, concurrency: int) -> None:
    db = Database(url, pool_size=2)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp)
        args = ["--import", "jobs_bench_kinds", "--concurrency", str(concurrency)]
        # Starting (and stopping) blocks the loop, which has nothing else to run meanwhile.
        with running_workers(worker_env(url), logdir, workers, args=args):
            await fill(db, jobs)
            started = time.perf_counter()
            while (done := await done_count(db)) < jobs:
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
    await db.dispose()
    print(f"throughput: {jobs} no-op jobs, {workers} worker processes x concurrency {concurrency}")
    print(f"  {done} done in {elapsed:.2f} s = {jobs / elapsed:,.0f} jobs/s")


async def enqueue_cost(url: str, *, requests: int) -> None:
    db = Database(url, pool_size=2)
    variants = ("audit row only", "audit row + enqueue", "audit row + enqueue(unique_key)")
    whole: dict[str, list[float]] = {name: [] for name in variants}
    calls: dict[str, list[float]] = {name: [] for name in variants[1:]}

    async def request(n: int, variant: str) -> None:
        # A request-sized transaction: an audit row, and (or not) one job.
        begin = time.perf_counter()
        async with db.transaction() as session:
            t0 = time.perf_counter()
            if variant == variants[1]:
                await enqueue(session, kind="bench.noop", payload={"payment_id": f"pay_{n}"})
            elif variant == variants[2]:
                await enqueue(
                    session,
                    kind="bench.noop",
                    payload={"payment_id": f"pay_{n}"},
                    unique_key=f"bench:{uuid.uuid4().hex}",
                )
            if variant != variants[0]:
                calls[variant].append((time.perf_counter() - t0) * 1e6)
            session.add(AuditRecord(at=utcnow(), actor="bench", action="bench", details={"n": n}))
        whole[variant].append((time.perf_counter() - begin) * 1e6)

    for n in range(300):  # warm up the pool and the statement caches
        await request(n, variants[n % 3])
    for values in (*whole.values(), *calls.values()):
        values.clear()
    for n in range(requests):
        for variant in variants:
            await request(n, variant)
    await db.dispose()

    def line(name: str, values: list[float]) -> str:
        return (
            f"  {name:<52} p50 {statistics.median(values):7.0f} µs   "
            f"p99 {percentile(values, 0.99):7.0f} µs"
        )

    print(f"enqueue in a request-sized transaction ({requests} transactions of each variant):")
    print(line("enqueue() call (ORM add, flushed at commit)", calls[variants[1]]))
    print(line("enqueue(unique_key=…) call (INSERT … ON CONFLICT)", calls[variants[2]]))
    for name in variants:
        print(line(f"whole transaction, {name}", whole[name]))
    base = statistics.median(whole[variants[0]])
    for name in variants[1:]:
        print(f"  => {name}: +{statistics.median(whole[name]) - base:.0f} µs p50 per transaction")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args()

    name = f"azora_jobs_bench_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        await asyncio.to_thread(upgrade, url)
        await throughput(url, jobs=args.jobs, workers=args.workers, concurrency=args.concurrency)
        await enqueue_cost(url, requests=args.requests)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
