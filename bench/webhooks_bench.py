"""Webhook ingest throughput: one, then two `azora-payments serve` processes (each count on a
fresh PostgreSQL database), 32 concurrent connections posting signed events with distinct ids;
prints verified events/s and latency beside the same servers' bare-endpoint ceiling (GET
/healthz) measured the same way in the same run, then the cost per event by server count.
Reports, never asserts.

    .venv/bin/python bench/webhooks_bench.py [--seconds 10] [--connections 32] [--servers 1,2]

The load comes from `wrk` (Debian/Ubuntu: `apt-get install wrk`; macOS: `brew install wrk`), one
single-threaded instance per server, so that the sender costs little beside the servers: a
Python sender was itself the ceiling. The events are built and signed in Python just before the
run (a signature is good for 300 s), one distinct event per request, and a Lua script sends
them in turn. Needs PostgreSQL at TEST_POSTGRES_URL (default the local trust user).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from azora_payments.db.migrate import upgrade
from azora_payments.devstack.processes import ServiceProcess, running_servers
from machine import ADMIN_URL, admin, cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_bench0123456789abcdef"
# Events generated per second of run, shared among the servers: above what two cores can
# ingest through any number of servers, so that no event is sent twice (a duplicate is cheaper
# than a new event and would flatter the figure; one server once ran out at 2,500 a second).
EVENTS_PER_SECOND = 6_000

# One wrk thread: without an events file it asks for GET /healthz, with one it posts the file's
# events in order (a line: signature, tab, body). `done` prints one line for the bench to read.
WRK_SCRIPT = r"""
local mode, sigs, bodies, i = "healthz", {}, {}, 0
wrapped = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  if args[1] then
    mode = "webhook"
    for line in io.lines(args[1]) do
      local sig, body = line:match("^([^\t]+)\t(.*)$")
      sigs[#sigs + 1] = sig
      bodies[#bodies + 1] = body
    end
  end
end

function request()
  if mode == "healthz" then
    return wrk.format("GET", "/healthz")
  end
  i = i + 1
  if i > #bodies then
    i = 1
    wrapped = wrapped + 1
  end
  return wrk.format("POST", "/api/webhooks/stripe",
    {["Content-Type"] = "application/json", ["Stripe-Signature"] = sigs[i]}, bodies[i])
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format("AZORA %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(50),
    latency:percentile(99), wraps))
end
"""


def database_cpu(url: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to our database."""

    async def pids() -> list[int]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                url.rsplit("/", 1)[1],
            )
        finally:
            await conn.close()
        return [int(r["pid"]) for r in rows]

    return sum(cpu_seconds(pid) for pid in asyncio.run(pids()))


@contextmanager
def database() -> Iterator[str]:
    name = f"azora_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def service_env(url: str) -> dict[str, str]:
    """The environment of the bench's servers and workers: production rules, no Stripe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "JWT_"))}
    env.update(
        AZORA_ENV="test",
        DATABASE_URL=url,
        STRIPE_SECRET_KEY="sk_test_" + "bench" * 6,
        STRIPE_WEBHOOK_SECRET=SECRET,
        STRIPE_API_BASE="http://127.0.0.1:9",  # ingest (and applying known events) never needs it
        JWT_SECRET="bench-" + "0123456789abcdef" * 3,
        LOG_LEVEL="WARNING",
    )
    return env


@contextmanager
def servers(url: str, count: int) -> Iterator[list[ServiceProcess]]:
    """`count` servers on `url`, answering `/healthz`; stopped (and their logs gone) after."""
    env = service_env(url)
    # Stripe delivers from a few addresses; the per-address client limit is not for it.
    env["RATE_LIMIT_IP"] = "10000000/minute"
    with (
        tempfile.TemporaryDirectory(prefix="azora-wh-servers-") as logs,
        running_servers(env, Path(logs), count) as started,
    ):
        yield started


def signed_event(n: int, now: int) -> str:
    """One line of an events file: a signature made now, a tab, the event's JSON."""
    body = json.dumps(
        {
            "id": f"evt_bench_{uuid.uuid4().hex}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "api_version": "2026-10-28.endive",
            "created": now,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {
                "object": {
                    "id": f"pi_bench_{n}",
                    "object": "payment_intent",
                    "status": "succeeded",
                    "amount": 2000,
                    "currency": "usd",
                    "metadata": {},
                }
            },
        },
        separators=(",", ":"),
    )
    mac = hmac.new(SECRET.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={now},v1={mac}\t{body}\n"


def write_events(path: Path, count: int, first: int) -> None:
    now = int(time.time())
    with path.open("w") as out:
        out.writelines(signed_event(first + n, now) for n in range(count))


@dataclass
class Measure:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    wrapped: int
    cpu_seconds: float
    pg_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk(
    url: str,
    servers: list[ServiceProcess],
    script: Path,
    connections: int,
    seconds: int,
    files: list[Path] | None,
    profile: Path | None = None,
) -> Measure:
    """One wrk per server, all at once, `connections` shared out between them; with `profile`,
    the first server sampled by py-spy during the measure (raw collapsed stacks to that file)."""
    per_server = max(1, connections // len(servers))
    procs = []
    sampler = None
    if profile is not None:
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"]
        spy += ["--rate", "200", "--pid", str(servers[0].proc.pid), "-o", str(profile)]
        sampler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # py-spy attaches before the load starts
    cpu_before = sum(cpu_seconds(s.proc.pid) for s in servers)
    pg_before = database_cpu(url)  # the pools are warm: the same backends before and after
    for n, server in enumerate(servers):
        command = ["wrk", "-t1", f"-c{per_server}", f"-d{seconds}s", "--timeout", "10s"]
        command += ["-s", str(script), server.url]
        if files is not None:
            command += ["--", str(files[n])]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    outputs = [proc.communicate()[0] for proc in procs]
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        sampler.wait(60)
    cpu = sum(cpu_seconds(s.proc.pid) for s in servers) - cpu_before
    pg_cpu = max(0.0, database_cpu(url) - pg_before)
    rows = []
    for output in outputs:
        line = next((ln for ln in output.splitlines() if ln.startswith("AZORA ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{output}")
        rows.append([int(x) for x in line.split()[1:]])
    return Measure(
        requests=sum(r[0] for r in rows),
        seconds=max(r[1] for r in rows) / 1e6,
        non_2xx=sum(r[2] for r in rows),
        socket_errors=sum(r[3] for r in rows),
        p50_ms=max(r[4] for r in rows) / 1000,
        p99_ms=max(r[5] for r in rows) / 1000,
        wrapped=sum(r[6] for r in rows),
        cpu_seconds=cpu,
        pg_cpu_seconds=pg_cpu,
    )


def report(label: str, unit: str, m: Measure) -> None:
    print(
        f"{label:<27}{m.rate:8.0f} {unit:<6} p50 {m.p50_ms:6.1f} ms   p99 {m.p99_ms:6.1f} ms   "
        f"CPU ms/req: servers {m.cpu_seconds / max(m.requests, 1) * 1000:4.2f}, "
        f"PostgreSQL {m.pg_cpu_seconds / max(m.requests, 1) * 1000:4.2f}   "
        f"non-2xx {m.non_2xx}   socket errors {m.socket_errors}"
    )


def count_recorded(url: str) -> tuple[int, int]:
    async def count() -> tuple[int, int]:
        conn = await asyncpg.connect(url)
        try:
            rows: int = await conn.fetchval("SELECT count(*) FROM webhook_events")
            jobs: int = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE kind = 'stripe.event.apply'"
            )
            return rows, jobs
        finally:
            await conn.close()

    return asyncio.run(count())


def measure_size(
    count: int, connections: int, seconds: int, workdir: Path, profile: Path | None
) -> tuple[Measure, Measure]:
    """`count` servers on a fresh database: the ceiling, then the ingest (printed as it goes)."""
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT)
    with database() as url:
        with servers(url, count) as running:
            per_server = EVENTS_PER_SECOND * seconds // count
            warm = [workdir / f"warm{n}.tsv" for n in range(count)]
            files = [workdir / f"events{n}.tsv" for n in range(count)]
            # Warm the servers' pools and code paths first (these events are counted apart).
            for n, path in enumerate(warm):
                write_events(path, 2_000, first=(n + 1) * 10_000_000)
            wrk(url, running, script, connections, 2, None)
            warmed = wrk(url, running, script, connections, 2, warm)
            ceiling = wrk(url, running, script, connections, seconds, None)
            for n, path in enumerate(files):
                write_events(path, per_server, first=n * per_server)
            load_before = os.getloadavg()
            ingest = wrk(url, running, script, connections, seconds, files, profile)
        recorded, jobs = count_recorded(url)
    print(
        f"\nservers: {count}, connections: {connections} "
        f"(wrk, one thread per server), {seconds} s per measure, "
        f"nproc {os.cpu_count()}, load average before the ingest measure "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    report("GET /healthz (ceiling):", "req/s", ceiling)
    report("POST webhook (verified):", "ev/s", ingest)
    sent = warmed.requests + ingest.requests
    print(
        f"recorded events: {recorded}, their apply jobs: {jobs}, 200s answered: "
        f"{sent - warmed.non_2xx - ingest.non_2xx} (warm-up included; wrk does not count the "
        "answers still in flight when it stops)"
        + (f"; WARNING: the events ran out {ingest.wrapped} time(s)" if ingest.wrapped else "")
    )
    return ceiling, ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each measure")
    parser.add_argument("--connections", type=int, default=32, help="concurrent senders")
    parser.add_argument(
        "--servers", default="1,2", help="server processes: one measure per count (1,2)"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="FILE",
        help="profile the first server during the last ingest measure (py-spy raw stacks)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit(
            "webhooks_bench: `wrk` is not installed; it drives the load "
            "(Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)"
        )
    if not 1 <= args.seconds <= 120:
        parser.error("--seconds: 1 to 120 (signatures are good for 300 s)")
    try:
        counts = [int(n) for n in args.servers.split(",")]
    except ValueError:
        parser.error("--servers: comma-separated counts, e.g. 1,2")
    if not all(1 <= n <= 8 for n in counts):
        parser.error("--servers: 1 to 8 each")
    workdir = Path(tempfile.mkdtemp(prefix="azora-wh-bench-"))
    rows: list[tuple[int, Measure, Measure]] = []
    try:
        for i, count in enumerate(counts):
            profile = args.py_spy if i == len(counts) - 1 else None
            ceiling, ingest = measure_size(count, args.connections, args.seconds, workdir, profile)
            rows.append((count, ceiling, ingest))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n## cost per event by servers (flat CPU per event is the goal)")
    print(
        f"{'servers':>7} {'ev/s':>8} {'% of ceil':>10} {'srv CPU':>8} {'pg CPU':>7} "
        f"{'CPU vs first':>13}"
    )
    first = rows[0][2].cpu_seconds / max(rows[0][2].requests, 1)
    for count, ceiling, ingest in rows:
        per_event = ingest.cpu_seconds / max(ingest.requests, 1)
        pg_per_event = ingest.pg_cpu_seconds / max(ingest.requests, 1)
        print(
            f"{count:>7} {ingest.rate:>8.0f} {ingest.rate / ceiling.rate * 100:>9.1f}% "
            f"{per_event * 1000:>8.2f} {pg_per_event * 1000:>7.2f} "
            f"{per_event / first if first else 0:>13.2f}"
        )
    print("# CPU columns: ms per verified event (servers, PostgreSQL); aim: >= 3,000 ev/s")


if __name__ == "__main__":
    main()
