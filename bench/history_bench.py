"""`GET /api/payments/history` latency at depth and size, on 100,000 to 10,000,000 payments in
PostgreSQL, through one real `azora-payments serve` process. Prints figures and query plans;
asserts nothing.

    .venv/bin/python bench/history_bench.py [--payments 100000,1000000,10000000]
        [--requests 200] [--plans]

For each size, in a database of its own (created, loaded, dropped before the next): payments
spread over 1,000 users plus one heavy user (min(200,000, size / 5) payments) over two years,
with receipts for the succeeded ones and a few refunds, loaded with COPY (`load`; 10,000,000 in
a few minutes). Then p50/p99 of the first page and of a page 50,000 rows deep (or half the rows
the case matches, when fewer), as the heavy user and as an operator, without and with a status
filter; beside each, from the server's `Server-Timing` (SERVER_TIMING=all), its total and SQL
time, and so our own Python; the page's statement alone in PostgreSQL; the server's CPU per page;
and the ratio to the floor (`GET /healthz` of the same run plus the bare query). Last, each
case's p99 and CPU per page at every size against the smallest: how cost grows. EXPLAIN
(ANALYZE, BUFFERS) of the deep pages at the largest size (every size with --plans). Aim (issue
16): p99 under 5 ms at 1 M and at 10 M.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

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
    cpu_model,
    cpu_seconds,
    loadavg,
    pg_version,
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
SERVER_TIMING_METRIC = re.compile(r"([\w-]+);dur=([\d.]+)")

STATUSES = [("failed", 60), ("canceled", 10), ("requires_action", 8), ("processing", 2)]


# ---------------------------------------------------------------- data


PAYMENT_COLUMNS = [
    "id", "user_id", "status", "amount", "currency", "amount_refunded", "description",
    "metadata", "receipt_email", "save_payment_method", "payment_method_id", "card_brand",
    "card_last4", "card_exp_month", "card_exp_year", "stripe_customer_id",
    "stripe_payment_intent_id", "stripe_charge_id", "disputed", "created_at", "updated_at",
]  # fmt: skip
RECEIPT_COLUMNS = [
    "id", "payment_id", "number", "year", "sequence", "amount", "currency", "issued_at",
    "pdf_key", "emailed_at",
]  # fmt: skip
REFUND_COLUMNS = [
    "id", "payment_id", "amount", "currency", "status", "reason", "stripe_refund_id",
    "created_by", "created_at", "updated_at",
]  # fmt: skip
LOADED_TABLES = ("payments", "receipts", "refunds")
CHUNK = 20_000  # rows per COPY message


def _status(share: int) -> str:
    """A status with the STATUSES shares, from `share` in 0..999."""
    low = 0
    for status, width in STATUSES:
        low += width
        if share < low:
            return status
    return "succeeded"


def _rows(total: int, receipts: IO[str], refunds: IO[str]) -> Iterator[str]:
    """COPY text lines of `total` payments, oldest first over two years (as a live table fills
    up), writing the receipts and refunds that go with them to their own files."""
    rng = random.Random(16)
    heavy_share = min(200_000, total // 5) / total
    end = time.time()
    step = 730 * 86400 / total
    begin = end - 730 * 86400
    sequences: dict[int, int] = {}
    for g in range(1, total + 1):
        # Strictly increasing times, a random fraction of a step apart: no two payments share
        # a created_at, as none do in the service (microseconds and a lock per user).
        at_dt = datetime.fromtimestamp(begin + (g - 1 + rng.random()) * step, UTC)
        at = at_dt.isoformat()
        pid = f"pay_{g:010x}{rng.getrandbits(64):016x}"
        user = HEAVY_USER if rng.random() < heavy_share else f"user_{g % USERS:04d}"
        status = _status(rng.randrange(1000))
        amount = 500 + (g % 200) * 100
        refunded = 0
        if status == "succeeded":
            year = at_dt.year
            seq = sequences[year] = sequences.get(year, 0) + 1
            receipts.write(
                f"rcpt_{pid[4:]}\t{pid}\tR-{year}-{seq:07d}\t{year}\t{seq}\t{amount}\tusd\t"
                f"{at}\t\\N\t{at}\n"
            )
            if rng.random() < 0.01:
                refunded = amount
                later = (at_dt + timedelta(days=1)).isoformat()
                refunds.write(
                    f"rf_{pid[4:]}\t{pid}\t{amount}\tusd\tsucceeded\trequested_by_customer\t"
                    f"re_{pid[4:]}\tops_1\t{later}\t{later}\n"
                )
        n = g % USERS
        yield (
            f"{pid}\t{user}\t{status}\t{amount}\tusd\t{refunded}\tCourse #{g % 300}\t"
            f'{{"order_id": "ord_{g}"}}\tbuyer{n}@shop.example\tf\tpm_{pid[4:]}\tvisa\t4242\t'
            f"12\t2030\tcus_{g % (USERS + 1)}\tpi_{pid[4:]}\tch_{pid[4:]}\tf\t{at}\t{at}\n"
        )


async def _chunks(lines: Iterator[str]) -> AsyncIterator[bytes]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == CHUNK:
            yield "".join(batch).encode()
            batch.clear()
    if batch:
        yield "".join(batch).encode()


async def _secondary_indexes(conn: asyncpg.Connection) -> list[str]:
    """CREATE INDEX statements of the loaded tables' indexes that back no constraint."""
    rows = await conn.fetch(
        """
        SELECT pg_get_indexdef(i.indexrelid) AS ddl
        FROM pg_index AS i
        WHERE i.indrelid = ANY($1::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
        """,
        list(LOADED_TABLES),
    )
    return [str(r["ddl"]) for r in rows]


async def load(url: str, total: int) -> None:
    """`total` payments (one heavy user with min(200,000, total / 5) of them, the rest over
    USERS users), a receipt for each succeeded one and a refund for 1 % of those, into the
    empty tables of a migrated database: COPY FREEZE into the tables emptied in the same
    transaction, the secondary indexes built afterwards, foreign keys not re-checked row by row
    (the rows are consistent by construction). 10,000,000 payments load in minutes."""
    conn = await asyncpg.connect(url)
    try:
        present = await conn.fetchval("SELECT count(*) FROM (SELECT 1 FROM payments LIMIT 1) s")
        if present:
            raise RuntimeError("load() fills an empty database; this one has payments")
        started = time.perf_counter()
        indexes = await _secondary_indexes(conn)
        await conn.execute("SET maintenance_work_mem = '512MB'")
        # Superuser only (the bench's admin role): skips the per-row foreign-key triggers.
        await conn.execute("SET session_replication_role = replica")
        with tempfile.TemporaryDirectory(prefix="azora-history-") as tmp:
            receipts_path, refunds_path = Path(tmp, "receipts.tsv"), Path(tmp, "refunds.tsv")
            async with conn.transaction():
                # Emptied in this transaction, so COPY may write the rows frozen (no VACUUM
                # rewrite later) and mark the pages all-visible (index-only scans). CASCADE:
                # the tables that point at payments, empty too when payments is.
                await conn.execute("TRUNCATE " + ", ".join(LOADED_TABLES) + " CASCADE")
                for ddl in indexes:
                    name = ddl.split(" INDEX ", 1)[1].split(" ON ", 1)[0]
                    await conn.execute(f"DROP INDEX {name}")
                with receipts_path.open("w") as receipts, refunds_path.open("w") as refunds:
                    await conn.copy_to_table(
                        "payments",
                        source=_chunks(_rows(total, receipts, refunds)),
                        columns=PAYMENT_COLUMNS,
                        freeze=True,
                    )
                copied = time.perf_counter()
                for table, columns, path in (
                    ("receipts", RECEIPT_COLUMNS, receipts_path),
                    ("refunds", REFUND_COLUMNS, refunds_path),
                ):
                    await conn.copy_to_table(table, source=path, columns=columns, freeze=True)
                for ddl in indexes:
                    await conn.execute(ddl)
        loaded = time.perf_counter()
        await conn.execute("SET session_replication_role = DEFAULT")
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
            f"COPY payments {copied - started:.1f} s, receipts, refunds and "
            f"{len(indexes)} indexes {loaded - copied:.1f} s, VACUUM ANALYZE {done - loaded:.1f} s"
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


def _where(case: Case) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    args: list[Any] = []
    if not case.operator:
        args.append(HEAVY_USER)
        conditions.append(f"user_id = ${len(args)}")
    if case.status:
        args.append(case.status)
        conditions.append(f"status = ${len(args)}")
    return (("WHERE " + " AND ".join(conditions)) if conditions else ""), args


async def at_depth(url: str, case: Case) -> Case:
    """`case`, its depth cut to half the rows it matches at this size (shown in its name)."""
    if not case.depth:
        return case
    where, args = _where(case)
    conn = await asyncpg.connect(url)
    try:
        matching = int(await conn.fetchval(f"SELECT count(*) FROM payments {where}", *args))
    finally:
        await conn.close()
    return replace(case, depth=min(case.depth, matching // 2))


async def deep_cursor(url: str, case: Case) -> str:
    """The cursor the service hands out after `case.depth` rows (the SQL equivalent of a walk)."""
    where, args = _where(case)
    conn = await asyncpg.connect(url)
    try:
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


async def page_statement(url: str, case: Case, cursor: str | None) -> tuple[str, Any]:
    """The exact statement (and parameters) the repository runs for this page."""
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
    return next((s, p) for s, p in captured if "FROM payments" in s)


async def explain(url: str, statement: str, parameters: Any) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *parameters)
    finally:
        await conn.close()
    return [str(r[0]) for r in rows]


async def bare_query(url: str, statement: str, parameters: Any, n: int) -> list[float]:
    """The page query alone, prepared once, `n` times from one connection: PostgreSQL's share,
    the floor under the service's page."""
    conn = await asyncpg.connect(url)
    try:
        prepared = await conn.prepare(statement)
        for _ in range(10):
            await prepared.fetch(*parameters)
        times = []
        for _ in range(n):
            started = time.perf_counter()
            await prepared.fetch(*parameters)
            times.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return times


@dataclass
class Measured:
    times: list[float]  # seconds, at the client
    server_ms: list[float]  # Server-Timing total
    db_ms: list[float]  # Server-Timing db
    cpu_seconds: float  # of the server process, over the timed requests


async def measure(
    base: str, headers: dict[str, str], params: dict[str, Any], n: int, pid: int
) -> Measured:
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60.0) as http:
        for _ in range(10):  # warm-up
            (await http.get("/api/payments/history", params=params)).raise_for_status()
        out = Measured([], [], [], cpu_seconds(pid))
        for _ in range(n):
            started = time.perf_counter()
            response = await http.get("/api/payments/history", params=params)
            out.times.append(time.perf_counter() - started)
            response.raise_for_status()
            timing = dict(SERVER_TIMING_METRIC.findall(response.headers["server-timing"]))
            out.server_ms.append(float(timing["total"]))
            out.db_ms.append(float(timing["db"]))
        out.cpu_seconds = cpu_seconds(pid) - out.cpu_seconds
        page = response.json()
        assert len(page["data"]) == LIMIT, params
        assert page["has_more"], params
    return out


async def healthz(base: str, n: int) -> list[float]:
    """Sequential `GET /healthz` through the same server: the HTTP floor under every page."""
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as http:
        for _ in range(10):
            (await http.get("/healthz")).raise_for_status()
        times = []
        for _ in range(n):
            started = time.perf_counter()
            (await http.get("/healthz")).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def pct(values: list[float], q: float) -> float:
    """The q-quantile of durations in seconds, in ms."""
    return quantile(values, q) * 1000


def token(sub: str, roles: list[str] | None = None) -> dict[str, str]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + 3600, "email": "x@shop.example"}
    if roles:
        claims["roles"] = roles
    return {"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, 'HS256')}"}


@dataclass(frozen=True)
class Row:
    size: int
    case: Case
    p50: float
    p99: float
    cpu_ms: float  # server CPU per page


def run_size(total: int, requests: int, plans: bool) -> list[Row]:
    """Load `total` payments into a database of their own, measure every case, drop it."""
    name = f"azora_bench_hist_{uuid.uuid4().hex[:8]}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    server: ServiceProcess | None = None
    workdir = Path(tempfile.mkdtemp(prefix="azora-bench-"))
    rows: list[Row] = []
    try:
        print()
        print(f"## {total:,} payments (load average {loadavg()})")
        upgrade(url)
        asyncio.run(load(url, total))
        # Each answer says its time in SQL: the rest of the server's total is our own Python.
        env = service_env(url, workdir, JWT_SECRET=JWT_SECRET, SERVER_TIMING="all")
        server = start_bench_server(env, workdir)
        base = server.url
        heavy, operator = token(HEAVY_USER), token("ops_1", roles=["admin"])
        floor = asyncio.run(healthz(base, requests))
        floor50 = pct(floor, 0.5)
        print(
            f"# the ceiling, same run: GET /healthz p50 {floor50:.2f} ms, p99 "
            f"{pct(floor, 0.99):.2f} ms (sequential, same server); `query` = the page's own "
            f"statement alone in PostgreSQL, prepared, from one connection"
        )
        print(
            f"# {requests} sequential requests per case, limit={LIMIT}; srv/db = Server-Timing "
            "total and SQL time, py = srv - db (our own Python); all ms; cpu = server CPU ms "
            "per page; x floor = p50 / (healthz p50 + query p50)"
        )
        print(
            f"{'case':<50} {'p50':>6} {'p99':>6} {'max':>6} {'srv':>6} {'db':>6} {'py':>6} "
            f"{'query':>6} {'cpu':>6} {'x floor':>7} {'load':>5}"
        )
        explained: list[tuple[Case, list[str]]] = []
        for nominal in CASES:
            case = asyncio.run(at_depth(url, nominal))
            cursor = asyncio.run(deep_cursor(url, case)) if case.depth else None
            got = asyncio.run(
                measure(
                    base,
                    operator if case.operator else heavy,
                    case.params(cursor),
                    requests,
                    server.pid,
                )
            )
            statement, parameters = asyncio.run(page_statement(url, case, cursor))
            query50 = pct(asyncio.run(bare_query(url, statement, parameters, requests)), 0.5)
            srv50, db50 = quantile(got.server_ms, 0.5), quantile(got.db_ms, 0.5)
            py50 = quantile([t - d for t, d in zip(got.server_ms, got.db_ms, strict=True)], 0.5)
            p50, p99 = pct(got.times, 0.5), pct(got.times, 0.99)
            cpu_ms = got.cpu_seconds / requests * 1000
            print(
                f"{case.name:<50} {p50:>6.1f} {p99:>6.1f} {max(got.times) * 1000:>6.1f} "
                f"{srv50:>6.2f} {db50:>6.2f} {py50:>6.2f} {query50:>6.2f} "
                f"{cpu_ms:>6.2f} {p50 / (floor50 + query50):>7.1f} {loadavg().split()[0]:>5}"
            )
            rows.append(Row(total, nominal, p50, p99, cpu_ms))
            if plans and (case.depth or case.status == "processing"):
                explained.append((case, asyncio.run(explain(url, statement, parameters))))
        print(f"# load average after: {loadavg()}; aim: p99 under 5 ms at any depth and size")
        if explained:
            print()
            print(f"## EXPLAIN (ANALYZE, BUFFERS) of the page query at {total:,}")
            for case, plan in explained:
                print(f"### {case.name}")
                for line in plan:
                    print("    " + line)
    finally:
        stop_server(server, workdir)
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return rows


def growth(rows: list[Row], sizes: list[int]) -> None:
    """Per case, p99 and server CPU per page at each size, and against the smallest size."""
    print()
    print("## cost per unit by size (flat is the goal); per page of 20 rows")
    labels = "  ".join(f"{size:>12,}" for size in sizes)
    print(f"{'case (nominal depth)':<50} {'':>5} {labels}  {'last/first':>10}")
    for case in CASES:
        mine = {r.size: r for r in rows if r.case == case}
        measures: tuple[tuple[str, Callable[[Row], float]], ...] = (
            ("p99", lambda r: r.p99),
            ("cpu", lambda r: r.cpu_ms),
        )
        for what, value in measures:
            cells = "  ".join(f"{value(mine[size]):>12.2f}" for size in sizes)
            ratio = value(mine[sizes[-1]]) / value(mine[sizes[0]])
            print(f"{case.name:<50} {what:>5} {cells}  {ratio:>10.2f}")
    print("# p99 in ms at the client; cpu = server CPU ms per page (µs per row: x 50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--payments",
        default="100000,1000000,10000000",
        help="comma-separated sizes, each loaded (COPY) into a database of its own",
    )
    parser.add_argument("--requests", type=int, default=200, help="per case")
    parser.add_argument("--plans", action="store_true", help="EXPLAIN the deep pages")
    args = parser.parse_args()
    try:
        sizes = [int(x.replace("_", "")) for x in args.payments.split(",")]
    except ValueError:
        parser.error("--payments: comma-separated integers")
    if not all(100_000 <= n <= 20_000_000 for n in sizes) or not 1 <= args.requests <= 10_000:
        parser.error("--payments 100000..20000000 each, --requests 1..10000")

    print("# history_bench: GET /api/payments/history through one server process")
    print(
        f"# machine: nproc={os.cpu_count()}, cpu={cpu_model()!r}, "
        f"PostgreSQL {asyncio.run(pg_version())}, Python {platform.python_version()}, "
        f"load average {loadavg()}; disk free {shutil.disk_usage('/').free / 1e9:.0f} GB"
    )
    rows: list[Row] = []
    for i, size in enumerate(sizes):
        rows += run_size(size, args.requests, plans=args.plans or i == len(sizes) - 1)
    if len(sizes) > 1:
        growth(rows, sizes)


if __name__ == "__main__":
    main()
