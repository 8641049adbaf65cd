"""`GET /api/payments/history` latency at depth, on 1,000,000 payments in PostgreSQL, through one
real `azora-payments serve` process. Prints figures and query plans; asserts nothing.

    .venv/bin/python bench/history_bench.py [--payments 1000000] [--requests 200]

Loads payments spread over 1,000 users plus one heavy user (200,000 payments) over two years,
with receipts for the succeeded ones and a few refunds, ANALYZEs, then measures p50/p99 of the
first page and of a page 50,000 rows deep (its cursor taken from the row at that depth), as the
heavy user and as an operator, without and with a status filter. For each deep page it prints
EXPLAIN (ANALYZE, BUFFERS) of the exact page query the service runs. Aim (issue 5): under 20 ms
p99 at any depth. The database is created and dropped by the run.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
from sqlalchemy import event

from azora_payments.db.migrate import upgrade
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.session import Database
from azora_payments.devstack.processes import ServiceProcess
from azora_payments.pagination import encode_cursor
from machine import (
    ADMIN_URL,
    admin,
    header,
    loadavg,
    service_env,
    start_bench_server,
    stop_server,
)

JWT_SECRET = secrets.token_urlsafe(48)
HEAVY_USER = "user_heavy"
USERS = 1000
DEPTH = 50_000
LIMIT = 20

# status, share in thousandths (the rest succeeded)
STATUSES = [("failed", 60), ("canceled", 10), ("requires_action", 8), ("processing", 2)]


# ---------------------------------------------------------------- data


def status_case(share: str) -> str:
    """SQL CASE turning `share` (0..999) into a status with the STATUSES shares."""
    parts, low = [], 0
    for status, width in STATUSES:
        parts.append(f"WHEN {share} < {low + width} THEN '{status}'")
        low += width
    return "CASE " + " ".join(parts) + " ELSE 'succeeded' END"


async def load(url: str, total: int) -> None:
    heavy = min(200_000, total // 5)
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        # g = 1..total; the first `heavy` rows belong to the heavy user, the others are spread
        # over USERS users. created_at: two years back from now, random, to the microsecond.
        await conn.execute(
            f"""
            INSERT INTO payments (
                id, user_id, status, amount, currency, amount_refunded, description, metadata,
                receipt_email, save_payment_method, payment_method_id, card_brand, card_last4,
                card_exp_month, card_exp_year, stripe_customer_id, stripe_payment_intent_id,
                stripe_charge_id, disputed, created_at, updated_at)
            SELECT
                'pay_' || lpad(to_hex(g), 10, '0') || substr(md5(g::text), 1, 16),
                CASE WHEN g <= {heavy} THEN '{HEAVY_USER}'
                     ELSE 'user_' || lpad((g % {USERS})::text, 4, '0') END,
                {status_case("(hashint4(g) & 1023) % 1000")},
                500 + (g % 200) * 100, 'usd', 0, 'Course #' || (g % 300),
                jsonb_build_object('order_id', 'ord_' || g),
                'buyer' || (g % {USERS}) || '@shop.example', false, 'pm_' || md5(g::text),
                'visa', '4242', 12, 2030, 'cus_' || (g % {USERS + 1}),
                'pi_' || md5(g::text), 'ch_' || md5(g::text), false, at, at
            FROM (
                SELECT g, now() - random() * interval '730 days' AS at
                FROM generate_series(1, {total}) AS g
            ) AS src
            """
        )
        loaded = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO receipts (id, payment_id, number, year, sequence, amount, currency,
                                  issued_at, pdf_key, emailed_at)
            SELECT 'rcpt_' || substr(p.id, 5), p.id,
                   'R-' || extract(year FROM p.created_at)::int || '-' || lpad(r.n::text, 7, '0'),
                   extract(year FROM p.created_at)::int, r.n, p.amount, p.currency,
                   p.created_at, NULL, p.created_at
            FROM (SELECT id, row_number() OVER (PARTITION BY extract(year FROM created_at)
                                               ORDER BY created_at, id) AS n
                  FROM payments WHERE status = 'succeeded') AS r
            JOIN payments AS p ON p.id = r.id
            """
        )
        await conn.execute(
            """
            INSERT INTO refunds (id, payment_id, amount, currency, status, reason,
                                 stripe_refund_id, created_by, created_at, updated_at)
            SELECT 'rf_' || substr(id, 5), id, amount, currency, 'succeeded',
                   'requested_by_customer', 're_' || substr(id, 5), 'ops_1',
                   created_at + interval '1 day', created_at + interval '1 day'
            FROM payments WHERE status = 'succeeded' AND hashtext(id) % 100 = 0
            """
        )
        await conn.execute(
            """
            UPDATE payments SET amount_refunded = amount
            WHERE id IN (SELECT payment_id FROM refunds)
            """
        )
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")  # the load's dirty pages written before measuring
        done = time.perf_counter()
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM payments) AS payments,"
            " (SELECT count(*) FROM receipts) AS receipts,"
            " (SELECT count(*) FROM refunds) AS refunds,"
            f" (SELECT count(*) FROM payments WHERE user_id = '{HEAVY_USER}') AS heavy,"
            " (SELECT count(DISTINCT user_id) FROM payments) AS users,"
            " pg_size_pretty(pg_total_relation_size('payments')) AS size"
        )
        assert counts is not None
        print(
            f"# loaded {counts['payments']:,} payments ({counts['users']:,} users; "
            f"{HEAVY_USER}: {counts['heavy']:,}), {counts['receipts']:,} receipts, "
            f"{counts['refunds']:,} refunds; payments table + indexes {counts['size']}; "
            f"insert {loaded - started:.1f} s, the rest + VACUUM ANALYZE {done - loaded:.1f} s"
        )
    finally:
        await conn.close()


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    operator: bool
    status: str | None
    depth: int  # rows before the page; 0 = the first page

    @property
    def name(self) -> str:
        who = "operator" if self.operator else "heavy user"
        where = f"status={self.status}" if self.status else "no filter"
        page = f"{self.depth:,} deep" if self.depth else "first page"
        return f"{who:<10} {where:<24} {page}"

    @property
    def where(self) -> payments_repo.HistoryFilter:
        return payments_repo.HistoryFilter(
            user_id=None if self.operator else HEAVY_USER, status=self.status
        )

    def params(self, cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": LIMIT}
        if self.status:
            params["status"] = self.status
        if cursor:
            params["cursor"] = cursor
        return params


CASES = [
    Case(operator, status, depth)
    for operator in (False, True)
    for status, depth in (
        (None, DEPTH),
        ("succeeded", DEPTH),
        # failed: 6 % (the heavy user has ~12,000, everyone ~60,000); processing: 0.2 %
        ("failed", DEPTH if operator else DEPTH // 5),
        ("processing", 0),
    )
    for depth in sorted({0, depth})
]


async def deep_cursor(url: str, case: Case) -> str:
    """The cursor the service hands out after `case.depth` rows (the SQL equivalent of a walk)."""
    conn = await asyncpg.connect(url)
    try:
        conditions, args = [], []
        if not case.operator:
            args.append(HEAVY_USER)
            conditions.append(f"user_id = ${len(args)}")
        if case.status:
            args.append(case.status)
            conditions.append(f"status = ${len(args)}")
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        row = await conn.fetchrow(
            f"SELECT created_at, id FROM payments {where}"
            f" ORDER BY created_at DESC, id DESC OFFSET {case.depth - 1} LIMIT 1",
            *args,
        )
    finally:
        await conn.close()
    assert row is not None, case
    at: datetime = row["created_at"]
    return encode_cursor(at, str(row["id"]))


async def explain(url: str, case: Case, cursor: str | None) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the exact statement the repository runs for this page."""
    from azora_payments.pagination import decode_cursor

    db = Database(url)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        after = decode_cursor(cursor, str) if cursor else None
        async with db.transaction() as session:
            await payments_repo.page(session, where=case.where, limit=LIMIT + 1, after=after)
    finally:
        await db.dispose()
    statement, parameters = next((s, p) for s, p in captured if "FROM payments" in s)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *parameters)
    finally:
        await conn.close()
    return [str(r[0]) for r in rows]


async def measure(
    base: str, headers: dict[str, str], params: dict[str, Any], n: int
) -> list[float]:
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60.0) as http:
        for _ in range(10):  # warm-up
            (await http.get("/api/payments/history", params=params)).raise_for_status()
        times = []
        for _ in range(n):
            started = time.perf_counter()
            response = await http.get("/api/payments/history", params=params)
            times.append(time.perf_counter() - started)
            response.raise_for_status()
        page = response.json()
        assert len(page["data"]) == LIMIT, params
        assert page["has_more"], params
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def token(sub: str, roles: list[str] | None = None) -> dict[str, str]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + 3600, "email": "x@shop.example"}
    if roles:
        claims["roles"] = roles
    return {"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, 'HS256')}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="per case")
    args = parser.parse_args()
    if not 300_000 <= args.payments <= 5_000_000 or not 1 <= args.requests <= 10_000:
        parser.error("--payments 300000..5000000, --requests 1..10000")

    header("history_bench: GET /api/payments/history through one server process")
    name = f"azora_bench_hist_{uuid.uuid4().hex[:8]}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    server: ServiceProcess | None = None
    workdir = Path(tempfile.mkdtemp(prefix="azora-bench-"))
    try:
        upgrade(url)
        asyncio.run(load(url, args.payments))
        # Stripe is never called by history: its base stays out of reach.
        env = service_env(url, workdir, JWT_SECRET=JWT_SECRET)
        server = start_bench_server(env, workdir)
        base = server.url
        heavy, operator = token(HEAVY_USER), token("ops_1", roles=["admin"])

        print()
        print(f"## {args.requests} sequential requests per case, limit={LIMIT}")
        print(f"{'case':<50} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
        plans: list[tuple[Case, list[str]]] = []
        for case in CASES:
            cursor = asyncio.run(deep_cursor(url, case)) if case.depth else None
            times = asyncio.run(
                measure(
                    base, operator if case.operator else heavy, case.params(cursor), args.requests
                )
            )
            print(
                f"{case.name:<50} {pct(times, 0.5):>7.1f} {pct(times, 0.99):>7.1f} "
                f"{max(times) * 1000:>7.1f}"
            )
            if case.depth or case.status == "processing":
                plans.append((case, asyncio.run(explain(url, case, cursor))))
        print(f"# load average after: {loadavg()}; aim: p99 under 20 ms at any depth")

        print()
        print("## EXPLAIN (ANALYZE, BUFFERS) of the page query (deep pages, rare status)")
        for case, plan in plans:
            print(f"### {case.name}")
            for line in plan:
                print("    " + line)
    finally:
        stop_server(server, workdir)
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
