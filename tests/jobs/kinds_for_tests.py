"""Test-only job kinds, imported in-process and by worker processes (`--import
tests.jobs.kinds_for_tests`): they record every run and apply an effect idempotently by job id."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.session import create_engine
from azora_payments.jobs import JobContext, job_kind, scheduled_job

metadata = MetaData()

# One row per run (attempt), committed before the handler does anything else, so a run that
# is killed part way is still counted.
runs = Table(
    "job_test_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("scheduled_for", Float, nullable=False),
    Column("at", Float, nullable=False),
)
# The handler's effect: one row per job id, written idempotently like a real handler would.
effects = Table(
    "job_test_effects",
    metadata,
    Column("job_id", Integer, primary_key=True, autoincrement=False),
    Column("attempt", Integer, nullable=False),
)


async def create_tables(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    await engine.dispose()


async def _effect(session: AsyncSession, job_id: int, attempt: int) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(effects).values(job_id=job_id, attempt=attempt)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["job_id"]))


async def record(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Record the run and make the effect (committed together, before any sleep), then sleep.

    Payload: `fail_times` (fail the first N attempts), `sleep` seconds after the effect,
    `sleep_attempts` (which attempts sleep; all by default)."""
    failing = ctx.attempt <= int(payload.get("fail_times", 0))
    async with ctx.services.db.transaction() as session:
        await session.execute(
            runs.insert().values(
                job_id=ctx.job_id,
                kind=ctx.kind,
                attempt=ctx.attempt,
                pid=os.getpid(),
                scheduled_for=ctx.scheduled_for.timestamp(),
                at=time.time(),
            )
        )
        if not failing:
            await _effect(session, ctx.job_id, ctx.attempt)
    if failing:
        raise RuntimeError(f"planned failure {ctx.attempt} for buyer@shop.example")
    sleep = float(payload.get("sleep", 0))
    sleep_attempts = payload.get("sleep_attempts")
    if sleep and (sleep_attempts is None or ctx.attempt in sleep_attempts):
        await asyncio.sleep(sleep)


async def append(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Append "job_id pid" to the file `payload["path"]`: one small O_APPEND write is atomic
    across processes, so a job run twice shows up as a repeated id."""
    fd = os.open(payload["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{ctx.job_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


job_kind("test.append", max_attempts=3, timeout=10.0)(append)
job_kind("test.record", max_attempts=5, timeout=10.0, backoff_base=0.3, backoff_cap=5.0)(record)
job_kind("test.short_lease", max_attempts=5, timeout=2.0, backoff_base=0.1)(record)
job_kind("test.quick_timeout", max_attempts=2, timeout=0.3, backoff_base=0.05)(record)

if os.environ.get("AZORA_TEST_TICK_SECONDS"):
    scheduled_job(
        "test.tick", every=timedelta(seconds=float(os.environ["AZORA_TEST_TICK_SECONDS"]))
    )(record)


async def run_rows(url: str, *, kind: str | None = None) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(runs).order_by(runs.c.id)
            if kind is not None:
                query = query.where(runs.c.kind == kind)
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]
    finally:
        await engine.dispose()


async def effect_count(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(effects))).scalar_one())
    finally:
        await engine.dispose()
