"""Latency of every operator console page on 1,000,000 payments in PostgreSQL, through one real
`azora-payments serve` process, signed in as an operator. Prints figures; asserts nothing.

    .venv/bin/python bench/console_bench.py [--payments 1000000] [--requests 50]

Loads the payments with history_bench's loader (1,000 users and one heavy user over two years,
receipts, a few refunds), signs in once through /console/login, then measures p50/p99 of each
page: the overview (24 h and 30 days of aggregates, the hourly chart), payment searches (first
page, by user, by status, by amount range, by date), one payment's page with its timeline, and
the work lists. Aim (issue 13): every page under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from azora_payments.db.migrate import upgrade
from azora_payments.devstack.processes import ServiceProcess
from history_bench import HEAVY_USER, JWT_SECRET, load, pct
from machine import (
    ADMIN_URL,
    admin,
    header,
    loadavg,
    service_env,
    start_bench_server,
    stop_server,
)

COOKIE = "__Host-azora-console"


async def sample_payment(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        query = "SELECT id FROM payments WHERE status = 'succeeded' ORDER BY created_at DESC"
        return str(await conn.fetchval(query + " LIMIT 1"))
    finally:
        await conn.close()


def operator_token() -> str:
    import jwt

    now = int(time.time())
    claims = {"sub": "ops_bench", "roles": ["admin"], "iat": now, "exp": now + 7200}
    return jwt.encode(claims, JWT_SECRET, "HS256")


def sign_in(base: str) -> dict[str, str]:
    response = httpx.post(f"{base}/console/login", data={"token": operator_token()}, timeout=30)
    assert response.status_code == 303, response.text
    value = response.headers["set-cookie"].split(";", 1)[0]
    # Sent by hand: the cookie is `Secure`, and this client speaks plain http to loopback.
    return {"Cookie": value}


def pages(payment_id: str) -> list[tuple[str, str]]:
    return [
        ("overview (24 h + 30 days, chart)", "/console"),
        ("payments, first page", "/console/payments"),
        ("payments by user (heavy user)", f"/console/payments?q={HEAVY_USER}"),
        ("payments by status (failed)", "/console/payments?status=failed"),
        (
            "payments by amount range (usd 10-20)",
            "/console/payments?currency=usd&amount_min=10&amount_max=20",
        ),
        (
            "payments by date (one day, a year ago)",
            "/console/payments?date_from=2025-12-01&date_to=2025-12-01",
        ),
        ("one payment, with its timeline", f"/console/payments/{payment_id}"),
        ("disputes", "/console/disputes"),
        ("parked events", "/console/events"),
        ("dead jobs", "/console/jobs"),
        ("failed notifications", "/console/notifications"),
        ("refunds to approve", "/console/approvals"),
    ]


CEILINGS = [
    ("ceiling: GET /healthz (no template, no read)", "/healthz"),
    ("ceiling: sign-in page (a template, no read)", "/console/login"),
]


async def measure(
    base: str, headers: dict[str, str], paths: list[str], n: int
) -> dict[str, list[float]]:
    """Round robin over the pages, so a burst of load on this shared machine slows them all
    alike instead of one page's run."""
    times: dict[str, list[float]] = {path: [] for path in paths}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120.0) as http:
        for path in paths:
            for _ in range(3):
                (await http.get(path)).raise_for_status()
        for _ in range(n):
            for path in paths:
                started = time.perf_counter()
                response = await http.get(path)
                times[path].append(time.perf_counter() - started)
                response.raise_for_status()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50, help="per page")
    parser.add_argument(
        "--database-url",
        default=None,
        help="an existing database already loaded by history_bench's loader (kept as it is)",
    )
    args = parser.parse_args()
    if not 300_000 <= args.payments <= 5_000_000 or not 1 <= args.requests <= 10_000:
        parser.error("--payments 300000..5000000, --requests 1..10000")

    header("console_bench: every /console page through one server process")
    name = f"azora_bench_console_{uuid.uuid4().hex[:8]}"
    url = args.database_url or ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    if args.database_url is None:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    server: ServiceProcess | None = None
    workdir = Path(tempfile.mkdtemp(prefix="azora-bench-"))
    try:
        upgrade(url)
        if args.database_url is None:
            asyncio.run(load(url, args.payments))
        # No page calls Stripe: its base stays out of reach.
        env = service_env(url, workdir, JWT_SECRET=JWT_SECRET, CONSOLE_ENABLED="true")
        server = start_bench_server(env, workdir)
        base = server.url
        headers = sign_in(base)
        payment_id = asyncio.run(sample_payment(url))

        print()
        print(f"## {args.requests} sequential requests per page, {args.payments} payments")
        rows = CEILINGS + pages(payment_id)
        measured = asyncio.run(measure(base, headers, [path for _, path in rows], args.requests))
        floor = pct(measured[CEILINGS[1][1]], 0.5)
        print(f"{'page':<45} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'p50 / sign-in':>14}")
        for label, path in rows:
            times = measured[path]
            print(
                f"{label:<45} {pct(times, 0.5):>7.1f} {pct(times, 0.99):>7.1f} "
                f"{max(times) * 1000:>7.1f} {pct(times, 0.5) / floor:>13.1f}x"
            )
        print(f"# load average after: {loadavg()}; aim: every page under 50 ms")
    finally:
        stop_server(server, workdir)
        if args.database_url is None:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
