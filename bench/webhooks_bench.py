"""Webhook ingest throughput: two `azora-payments serve` processes on a fresh PostgreSQL database,
32 concurrent senders posting signed events with distinct ids; prints verified events/s and
latency beside the same servers' bare-endpoint ceiling (GET /healthz) measured in the same run.

    .venv/bin/python bench/webhooks_bench.py [--events 4000] [--senders 32]

Reports, never asserts. Needs PostgreSQL at TEST_POSTGRES_URL (default the local trust user).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from azora_payments.db.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "whsec_bench0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def database() -> Iterator[str]:
    name = f"azora_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def servers(url: str, count: int) -> Iterator[list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "JWT_"))}
    env.update(
        AZORA_ENV="test",
        DATABASE_URL=url,
        STRIPE_SECRET_KEY="sk_test_" + "bench" * 6,
        STRIPE_WEBHOOK_SECRET=SECRET,
        STRIPE_API_BASE="http://127.0.0.1:9",  # ingest must never need Stripe
        JWT_SECRET="bench-" + "0123456789abcdef" * 3,
        LOG_LEVEL="WARNING",
        # Stripe delivers from a few addresses; the per-address client limit is not for it.
        RATE_LIMIT_IP="10000000/minute",
    )
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "azora_payments.cli", "serve", "--port", str(port)],
                    env=env,
                    cwd=ROOT,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs, strict=True):
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(base)
                time.sleep(0.1)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


def signed_event(n: int) -> tuple[bytes, str]:
    body = json.dumps(
        {
            "id": f"evt_bench_{uuid.uuid4().hex}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
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
        }
    ).encode()
    t = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={t},v1={mac}"


async def load(
    total: int, senders: int, make: Callable[[httpx.AsyncClient, int], Awaitable[int]]
) -> tuple[float, list[float], int]:
    """Run `total` requests from `senders` concurrent loops; (seconds, latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)

    async def sender(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for n in counter:
            started = time.perf_counter()
            status = await make(http, n)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                failures += 1

    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        began = time.perf_counter()
        await asyncio.gather(*(sender(http) for _ in range(senders)))
        elapsed = time.perf_counter() - began
    return elapsed, latencies, failures


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(bases: list[str], events: int, senders: int) -> None:
    bodies = [signed_event(n) for n in range(events)]

    async def post_event(http: httpx.AsyncClient, n: int) -> int:
        body, signature = bodies[n]
        response = await http.post(
            f"{bases[n % len(bases)]}/api/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        )
        return response.status_code

    async def healthz(http: httpx.AsyncClient, n: int) -> int:
        return (await http.get(f"{bases[n % len(bases)]}/healthz")).status_code

    # Warm both servers' pools and code paths first.
    await load(200, senders, healthz)
    h_elapsed, h_lat, h_fail = await load(events, senders, healthz)
    w_elapsed, w_lat, w_fail = await load(events, senders, post_event)
    print(f"servers: {len(bases)}, senders: {senders}, requests per measure: {events}")
    print(
        f"GET /healthz (ceiling):    {events / h_elapsed:8.0f} req/s   "
        f"p50 {pct(h_lat, 0.50):6.1f} ms   p99 {pct(h_lat, 0.99):6.1f} ms   failures {h_fail}"
    )
    print(
        f"POST webhook (verified):   {events / w_elapsed:8.0f} ev/s    "
        f"p50 {pct(w_lat, 0.50):6.1f} ms   p99 {pct(w_lat, 0.99):6.1f} ms   failures {w_fail}"
    )


def count_recorded(url: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            rows: int = await conn.fetchval("SELECT count(*) FROM webhook_events")
            jobs: int = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE kind = 'stripe.event.apply'"
            )
            return rows if rows == jobs else -1
        finally:
            await conn.close()

    return asyncio.run(count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--servers", type=int, default=2)
    args = parser.parse_args()
    with database() as url:
        with servers(url, args.servers) as bases:
            asyncio.run(run(bases, args.events, args.senders))
        recorded = count_recorded(url)
        print(f"recorded events (each with its apply job): {recorded}")


if __name__ == "__main__":
    main()
