"""Webhook events *applied*, end to end: `payment_intent.succeeded` for payments we know, posted
signed to `azora-payments serve` processes (by wrk, as in `webhooks_bench.py`) and applied by
`azora-payments worker` processes (`--kinds stripe.event.apply`), on a fresh PostgreSQL
database per worker count. Reports, never asserts.

    .venv/bin/python bench/webhooks_apply_bench.py [--workers 1,2] [--seconds 8] [--servers 2]

For each worker count, two measures:

- **pre-filled**: the events are recorded first with no worker running, then the workers drain
  the queue: events applied per second between the first and the last `applied_at`;
- **live**: the workers run while wrk posts events as fast as the servers take them: events
  applied per second (from the first `200` of the phase to the last event applied) and the lag
  from `200` to applied (`applied_at - received_at`; `received_at` is written in the
  transaction whose commit comes just before the `200`), median and p99.

Beside them: the bare ceiling (`GET /healthz`, same servers, same run), the CPU ms per applied
event of the workers and of PostgreSQL, and the follow-up jobs the events queued. The workers
use the default poll interval (`WORKER_POLL_SECONDS`, 0.5 s) and concurrency unless told.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from azora_payments.devstack.processes import ServiceProcess, running_workers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_seconds, header  # noqa: E402
from webhooks_bench import (  # noqa: E402
    WRK_SCRIPT,
    Measure,
    database,
    database_cpu,
    servers,
    service_env,
    write_events,
    wrk,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _add_payments(url: str, count: int) -> None:
    """`count` payments waiting for Stripe's answer, `pi_bench_<n>` each (COPY: seconds)."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "payments",
            columns=[
                "id",
                "user_id",
                "status",
                "amount",
                "currency",
                "amount_refunded",
                "metadata",
                "save_payment_method",
                "disputed",
                "stripe_payment_intent_id",
                "created_at",
                "updated_at",
            ],
            records=(
                (
                    f"pay_bench_{n}",
                    f"user_{n % 1000}",
                    "processing",
                    2000,
                    "usd",
                    0,
                    "{}",
                    False,
                    False,
                    f"pi_bench_{n}",
                    now,
                    now,
                )
                for n in range(count)
            ),
        )
        await conn.execute("ANALYZE payments")
    finally:
        await conn.close()


def add_payments(url: str, count: int) -> None:
    asyncio.run(_add_payments(url, count))


@dataclass
class Applied:
    events: int
    applied: int
    first_received: datetime | None
    first_applied: datetime | None
    last_applied: datetime | None
    lags_ms: list[float]
    follow_ups: int


async def _applied_since(url: str, since: datetime) -> Applied:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT received_at, applied_at, status FROM webhook_events WHERE received_at >= $1",
            since,
        )
        follow_ups = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE kind <> 'stripe.event.apply' AND created_at >= $1",
            since,
        )
    finally:
        await conn.close()
    done = [r for r in rows if r["applied_at"] is not None]
    return Applied(
        events=len(rows),
        applied=sum(1 for r in done if r["status"] == "applied"),
        first_received=min((r["received_at"] for r in rows), default=None),
        first_applied=min((r["applied_at"] for r in done), default=None),
        last_applied=max((r["applied_at"] for r in done), default=None),
        lags_ms=[(r["applied_at"] - r["received_at"]).total_seconds() * 1000 for r in done],
        follow_ups=int(follow_ups or 0),
    )


async def _unapplied(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        value = await conn.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'received'")
    finally:
        await conn.close()
    return int(value or 0)


def wait_applied(url: str, timeout: float) -> int:
    """Until every recorded event is applied (or `timeout`); how many are left."""
    deadline = time.monotonic() + timeout
    while (left := asyncio.run(_unapplied(url))) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@contextmanager
def workers(
    url: str,
    count: int,
    logdir: Path,
    concurrency: int | None,
    poll: float | None,
    profile: Path | None = None,
    batch_size: int | None = None,
) -> Iterator[list[ServiceProcess]]:
    env = service_env(url)
    if poll is not None:
        env["WORKER_POLL_SECONDS"] = str(poll)
    if batch_size is not None:
        env["WORKER_BATCH_SIZE"] = str(batch_size)
    args = ["--kinds", "stripe.event.apply"]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    samplers: list[subprocess.Popen[bytes]] = []
    # At the bench's LOG_LEVEL=WARNING a worker logs no "worker started": not waited for, as
    # before (the phases count from the first 200 anyway).
    with running_workers(env, logdir, count, args=args, wait=False) as procs:
        try:
            for n, process in enumerate(procs if profile is not None else []):
                assert profile is not None
                # Collapsed stacks (a stack, then its sample count), idle frames left out.
                spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"]
                spy += ["--rate", "250", "--pid", str(process.pid)]
                spy += ["-o", str(profile / f"worker-{count}-{n}.txt")]
                samplers.append(subprocess.Popen(spy, stdout=subprocess.DEVNULL))
            yield procs
        finally:
            for sampler in samplers:
                sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            for sampler in samplers:
                sampler.wait(60)


def db_now(url: str) -> datetime:
    async def now() -> datetime:
        conn = await asyncpg.connect(url)
        try:
            value: datetime = await conn.fetchval("SELECT now()")
            return value
        finally:
            await conn.close()

    return asyncio.run(now())


def rate(result: Applied, start: datetime | None) -> float:
    if start is None or result.last_applied is None:
        return 0.0
    span = (result.last_applied - start).total_seconds()
    return result.applied / span if span > 0 else 0.0


def run_one(
    args: argparse.Namespace, count: int, workdir: Path, script: Path
) -> tuple[Measure, Measure, Applied, Applied, float, float, float]:
    per_server = 2_500 * max(args.seconds, args.prefill_seconds)
    with database() as url:
        add_payments(url, per_server * args.servers * 2)
        with servers(url, args.servers) as running:
            wrk(url, running, script, args.connections, 2, None)  # warm the pools
            ceiling = wrk(url, running, script, args.connections, args.seconds, None)
            # Pre-filled: record first, then drain.
            pre_files = [workdir / f"pre{n}.tsv" for n in range(args.servers)]
            for n, path in enumerate(pre_files):
                write_events(path, per_server, first=n * per_server)
            since = db_now(url)
            wrk(url, running, script, args.connections, args.prefill_seconds, pre_files)
            with workers(
                url, count, workdir, args.concurrency, args.poll, args.py_spy, args.batch_size
            ) as procs:
                cpu0 = sum(cpu_seconds(p.pid) for p in procs)
                left = wait_applied(url, args.timeout)
                pg_cpu0 = database_cpu(url)
                prefilled = asyncio.run(_applied_since(url, since))
                drain_cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
                if left:
                    print(f"# WARNING: {left} events not applied within {args.timeout} s")
                # Live: ingest while the workers apply.
                live_files = [workdir / f"live{n}.tsv" for n in range(args.servers)]
                base = per_server * args.servers
                for n, path in enumerate(live_files):
                    write_events(path, per_server, first=base + n * per_server)
                since = db_now(url)
                cpu1 = sum(cpu_seconds(p.pid) for p in procs)
                ingest = wrk(url, running, script, args.connections, args.seconds, live_files)
                left = wait_applied(url, args.timeout)
                live_cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu1
                pg_cpu = database_cpu(url) - pg_cpu0
                live = asyncio.run(_applied_since(url, since))
                if left:
                    print(f"# WARNING: {left} events not applied within {args.timeout} s")
    return ceiling, ingest, prefilled, live, drain_cpu, live_cpu, pg_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--seconds", type=int, default=8, help="length of the live ingest")
    parser.add_argument("--prefill-seconds", type=int, default=4, help="ingest before draining")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None, help="worker --concurrency")
    parser.add_argument("--poll", type=float, default=None, help="WORKER_POLL_SECONDS")
    parser.add_argument("--batch-size", type=int, default=None, help="WORKER_BATCH_SIZE")
    parser.add_argument(
        "--counts", type=int, default=300, help="events of the in-process count (0: none)"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="wait for the drain")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="profile each worker with py-spy (collapsed stacks in DIR)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("webhooks_apply_bench: `wrk` is not installed (apt-get install wrk)")
    header("webhook events applied end to end (PostgreSQL)")
    print(
        f"# servers {args.servers}, wrk connections {args.connections}, live ingest "
        f"{args.seconds} s, worker concurrency {args.concurrency or 'default'}, poll "
        f"{args.poll or 'default'}, batch size {args.batch_size or 'default'}"
    )
    if args.counts:
        # Counted, not timed: what the load on the machine does not change.
        from apply_counts import measure
        from azora_payments.jobs.worker import WorkerOptions

        size = args.batch_size or getattr(WorkerOptions(), "kind_batch_size", 10)
        print("# in process, one worker: " + measure(args.counts, size).line(size))
    workdir = Path(tempfile.mkdtemp(prefix="azora-apply-bench-"))
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT)
    try:
        for count in (int(x) for x in args.workers.split(",")):
            ceiling, ingest, pre, live, drain_cpu, live_cpu, pg_cpu = run_one(
                args, count, workdir, script
            )
            pre_rate = rate(pre, pre.first_applied)
            live_rate = rate(live, live.first_received)
            print(
                f"workers {count}: ceiling GET /healthz {ceiling.rate:7.0f} req/s | "
                f"pre-filled {pre.applied} events: {pre_rate:6.0f} applied/s "
                f"({pre_rate / ceiling.rate * 100:4.1f} % of ceiling), worker CPU "
                f"{drain_cpu / max(pre.applied, 1) * 1000:.2f} ms/event"
            )
            print(
                f"           live: ingest {ingest.rate:6.0f} ev/s (non-2xx {ingest.non_2xx}), "
                f"applied {live.applied}/{live.events} at {live_rate:6.0f} applied/s "
                f"({live_rate / ceiling.rate * 100:4.1f} % of ceiling); 200->applied lag "
                f"p50 {percentile(live.lags_ms, 0.5):7.0f} ms, "
                f"p99 {percentile(live.lags_ms, 0.99):7.0f} ms; CPU ms/event: workers "
                f"{live_cpu / max(live.applied, 1) * 1000:.2f}, PostgreSQL (all) "
                f"{pg_cpu / max(live.applied, 1) * 1000:.2f}; follow-up jobs "
                f"{live.follow_ups}"
            )
            print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
