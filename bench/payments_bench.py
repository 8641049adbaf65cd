"""Payment throughput, latency and CPU through one real `azora-payments serve` process, against
the Stripe emulator, on a PostgreSQL database of its own. Prints figures; asserts nothing.

    .venv/bin/python bench/payments_bench.py [--levels 1,16,64] [--counts 300,500,500]
        [--card unknown|saved]

For each concurrency level: payments per second, p50/p99 latency, and the CPU time each payment
cost the service process, the emulator and PostgreSQL (the backends connected to the benchmark
database), from /proc/<pid>/stat; and, from each answer's `Server-Timing` (the server runs with
SERVER_TIMING=all), p50/p99 of our own time (the server's total less its time waiting on
Stripe) beside the server's total. Then the emulator's own ceiling: the same PaymentIntent
create+confirm posted straight to it, at the same concurrency, so the figures show what the
service adds, with the ratios of the two. Each level starts from an empty emulator. Aims (issue
16): service CPU under 5 ms per payment, then 3; own time p50 about 25 ms or less (what the best
payment switches publish for theirs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import jwt

from azora_payments.db.migrate import upgrade
from azora_payments.devstack.emulator import EmulatorProcess
from azora_payments.devstack.processes import ServiceProcess
from machine import (
    ADMIN_URL,
    TICK,
    admin,
    cpu_seconds,
    header,
    loadavg,
    service_env,
    start_bench_server,
    stop_server,
)

STRIPE_KEY = "sk_test_" + secrets.token_hex(12)
JWT_SECRET = secrets.token_urlsafe(48)
SERVER_TIMING_METRIC = re.compile(r"([\w-]+);dur=([\d.]+)")


# ---------------------------------------------------------------- load


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values` (any unit); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Run:
    clients: int
    done: int
    seconds: float
    latencies: list[float]
    errors: dict[int, int]
    # ms, from each answer's Server-Timing: the server's total, and that less Stripe's share.
    server_totals: list[float]
    own_times: list[float]

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    def pct(self, q: float) -> float:
        return pct(self.latencies, q) * 1000


def server_timing(response: httpx.Response) -> dict[str, float]:
    """`Server-Timing: stripe;dur=…, db;dur=…, total;dur=…` as {name: ms} (empty if absent)."""
    header = response.headers.get("server-timing", "")
    return {name: float(dur) for name, dur in SERVER_TIMING_METRIC.findall(header)}


async def load(clients: int, count: int, send: Callable[[int], Awaitable[httpx.Response]]) -> Run:
    """`count` requests from `clients` concurrent senders; `send(n)` returns the answer."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    server_totals: list[float] = []
    own_times: list[float] = []
    next_n = 0

    async def sender() -> None:
        nonlocal next_n
        while next_n < count:
            n = next_n
            next_n += 1
            started = time.perf_counter()
            response = await send(n)
            latencies.append(time.perf_counter() - started)
            if response.status_code not in (200, 201):
                errors[response.status_code] = errors.get(response.status_code, 0) + 1
            timing = server_timing(response)
            if "total" in timing:
                server_totals.append(timing["total"])
                own_times.append(timing["total"] - timing.get("stripe", 0.0))

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(clients)))
    seconds = time.perf_counter() - started
    return Run(clients, count, seconds, latencies, errors, server_totals, own_times)


def tokens(users: int, *, prefix: str) -> list[dict[str, str]]:
    now = int(time.time())
    out = []
    for i in range(users):
        claims = {"sub": f"{prefix}_{i}", "email": f"b{i}@shop.example", "iat": now}
        claims["exp"] = now + 3600
        out.append({"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, 'HS256')}"})
    return out


BODY = {
    "amount": 2000,
    "currency": "usd",
    "payment_method_id": "pm_card_visa",
    "description": "Course: Linear Algebra",
    "metadata": {"order_id": "ord_42"},
}


async def through_service(
    base: str,
    clients: int,
    count: int,
    headers: list[dict[str, str]],
    methods: list[str] | None = None,
) -> Run:
    """`count` payments by the buyers of `headers` in turn, each with its own saved method of
    `methods` when given, else with pm_card_visa (a card the service looks up in Stripe)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120.0, limits=limits) as http:

        async def send(n: int) -> httpx.Response:
            user = headers[n % len(headers)]
            body = (
                BODY
                if methods is None
                else {**BODY, "payment_method_id": methods[n % len(headers)]}
            )
            return await http.post(
                "/api/payments/process",
                json=body,
                headers={**user, "Idempotency-Key": uuid.uuid4().hex},
            )

        return await load(clients, count, send)


async def save_methods(base: str, headers: list[dict[str, str]]) -> list[str]:
    """Each buyer saves pm_card_visa: the id of each one's saved method."""
    async with httpx.AsyncClient(base_url=base, timeout=120.0) as http:
        saved = []
        for user in headers:
            response = await http.post(
                "/api/payments/methods/save",
                json={"payment_method_id": "pm_card_visa"},
                headers=user,
            )
            response.raise_for_status()
            saved.append(str(response.json()["id"]))
    return saved


async def straight_to_emulator(emulator: str, clients: int, count: int) -> Run:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    auth = {"Authorization": f"Bearer {STRIPE_KEY}"}
    async with httpx.AsyncClient(
        base_url=emulator, timeout=120.0, limits=limits, headers=auth
    ) as http:
        customer = (await http.post("/v1/customers", data={"email": "e@shop.example"})).json()

        async def send(n: int) -> httpx.Response:
            return await http.post(
                "/v1/payment_intents",
                data={
                    "amount": "2000",
                    "currency": "usd",
                    "customer": customer["id"],
                    "payment_method": "pm_card_visa",
                    "confirm": "true",
                    "automatic_payment_methods[enabled]": "true",
                    "automatic_payment_methods[allow_redirects]": "never",
                    "description": "Course: Linear Algebra",
                    "metadata[order_id]": "ord_42",
                    "metadata[azora_payment_id]": f"pay_bench{n}",
                },
                headers={"Idempotency-Key": f"azora:pi:{uuid.uuid4().hex}"},
            )

        return await load(clients, count, send)


async def reset_emulator(emulator: str) -> None:
    """Empty the emulator's store (and its idempotency cache, faults and counts)."""
    async with httpx.AsyncClient() as http:
        (await http.delete(f"{emulator}/_config/data")).raise_for_status()


async def database_cpu(url: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to our database, by pid."""
    conn = await asyncpg.connect(url)
    try:
        name = url.rsplit("/", 1)[1]
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()
    return {int(r["pid"]): cpu_seconds(int(r["pid"])) for r in pids}


async def stripe_counts(emulator: str) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        counts: dict[str, int] = (await http.get(f"{emulator}/_azora/requests")).json()
    return counts


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,16,64", help="concurrent clients per level")
    parser.add_argument("--counts", default="300,500,500", help="payments per level")
    parser.add_argument("--users", type=int, default=64, help="distinct buyers per level")
    parser.add_argument(
        "--card",
        choices=("unknown", "saved"),
        default="unknown",
        help="pay with pm_card_visa (looked up in Stripe) or with each buyer's saved card",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    counts = [int(x) for x in args.counts.split(",")]
    if len(counts) != len(levels) or min(counts) < 1 or max(counts) > 100_000:
        parser.error("--counts: one count (1..100000) per level")

    header("payments_bench: POST /api/payments/process through one server process")
    name = f"azora_bench_pay_{uuid.uuid4().hex[:8]}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    emulator = EmulatorProcess(webhook_delay=0.0)
    server: ServiceProcess | None = None
    workdir = Path(tempfile.mkdtemp(prefix="azora-bench-"))
    try:
        upgrade(url)
        emu = emulator.start()
        emu_proc = emulator._process  # its pid, for CPU time
        assert emu_proc is not None
        env = service_env(
            url,
            workdir,
            STRIPE_SECRET_KEY=STRIPE_KEY,
            STRIPE_API_BASE=emu,
            STRIPE_MAX_NETWORK_RETRIES="1",
            JWT_SECRET=JWT_SECRET,
            # Each answer says how long it waited on Stripe: our own time is the rest.
            SERVER_TIMING="all",
        )
        server = start_bench_server(env, workdir)
        base = server.url
        print(f"# emulator {emu}, server pid {server.pid} (1 process), {args.users} buyers/level")
        print(
            "# each level starts from an empty emulator (its cost per request grows with the "
            "objects it holds) and new buyers, warmed up with one payment each (not counted)"
        )
        service_rows, emulator_rows, ratio_rows = [], [], []
        first_cpu: float | None = None
        for clients, count in zip(levels, counts, strict=True):
            asyncio.run(reset_emulator(emu))
            headers = tokens(args.users, prefix=f"bench{clients}")
            methods = asyncio.run(save_methods(base, headers)) if args.card == "saved" else None
            asyncio.run(through_service(base, 8, args.users, headers, methods))  # customers, pools
            calls_before = sum(asyncio.run(stripe_counts(emu)).values())
            svc, emu_cpu = cpu_seconds(server.pid), cpu_seconds(emu_proc.pid)
            pg = asyncio.run(database_cpu(url))
            run = asyncio.run(through_service(base, clients, count, headers, methods))
            svc = cpu_seconds(server.pid) - svc
            emu_cpu = cpu_seconds(emu_proc.pid) - emu_cpu
            pg_after = asyncio.run(database_cpu(url))
            pg_used = sum(pg_after.values()) - sum(pg.get(pid, 0.0) for pid in pg_after)
            calls = sum(asyncio.run(stripe_counts(emu)).values()) - calls_before
            load_during = loadavg().split()[0]
            svc_ms = svc / count * 1000
            first_cpu = svc_ms if first_cpu is None else first_cpu
            own50, total50 = pct(run.own_times, 0.5), pct(run.server_totals, 0.5)
            service_rows.append(
                f"{clients:>7} {count:>8} {run.rate:>7.1f} {run.pct(0.5):>7.1f} "
                f"{run.pct(0.99):>7.1f} {own50:>7.1f} {pct(run.own_times, 0.99):>7.1f} "
                f"{total50:>7.1f} {pct(run.server_totals, 0.99):>7.1f} {svc_ms:>8.2f} "
                f"{emu_cpu / count * 1000:>7.2f} {pg_used / count * 1000:>6.2f} "
                f"{calls / count:>7.2f} {load_during:>5} {run.errors or '-'}"
            )

            asyncio.run(reset_emulator(emu))
            emu_cpu = cpu_seconds(emu_proc.pid)
            ceiling = asyncio.run(straight_to_emulator(emu, clients, count))
            emu_cpu = cpu_seconds(emu_proc.pid) - emu_cpu
            emulator_rows.append(
                f"{clients:>7} {count:>8} {ceiling.rate:>7.1f} {ceiling.pct(0.5):>7.1f} "
                f"{ceiling.pct(0.99):>7.1f} {emu_cpu / count * 1000:>14.2f} "
                f"{loadavg().split()[0]:>5} {ceiling.errors or '-'}"
            )
            ratio_rows.append(
                f"{clients:>7} {run.rate / ceiling.rate * 100:>13.1f} "
                f"{run.pct(0.5) / ceiling.pct(0.5):>13.1f} "
                f"{own50 / total50 * 100:>13.1f} {svc_ms / first_cpu:>13.2f}"
            )

        print()
        card = "pm_card_visa" if args.card == "unknown" else "each buyer's saved card"
        print(f"## through the service (each request a new Idempotency-Key, {card})")
        print(
            "# own = the server's Server-Timing total less its stripe share; srv = that total "
            "(request in to response headers out); p50/p99 columns in ms; load = 1-min "
            "load average at the end of the level"
        )
        print(
            f"{'clients':>7} {'payments':>8} {'pay/s':>7} {'p50':>7} {'p99':>7} "
            f"{'own p50':>7} {'own p99':>7} {'srv p50':>7} {'srv p99':>7} {'svc CPU':>8} "
            f"{'emu CPU':>7} {'pg CPU':>6} {'calls':>7} {'load':>5} errors"
        )
        print("\n".join(service_rows))
        print()
        print("## the ceiling: the emulator alone (PaymentIntent create+confirm posted to it)")
        print(
            f"{'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'emu CPU ms/req':>14} {'load':>5} errors"
        )
        print("\n".join(emulator_rows))
        print()
        print("## ratios (service against the ceiling of the same level; own time in the total)")
        print(
            f"{'clients':>7} {'% of ceil/s':>13} {'p50 x ceil':>13} {'own % of srv':>13} "
            f"{'CPU vs first':>13}"
        )
        print("\n".join(ratio_rows))
        print()
        print(
            "# aims: service CPU under 5 ms per payment, then 3; own time p50 about 25 ms. CPU "
            f"columns are ms per payment (clock tick 1/{TICK} s); calls = Stripe calls per "
            "payment; CPU vs first = the cost per payment against the first level's (flat is "
            f"the goal); client, server, emulator and PostgreSQL share {os.cpu_count()} cores; "
            f"load average after: {loadavg()}."
        )
    finally:
        stop_server(server, workdir)
        emulator.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
