"""The `worker` and `jobs list|retry` commands, called by `azora_payments.cli`."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from azora_payments import telemetry
from azora_payments.config import Settings
from azora_payments.db.repositories import jobs as jobs_repo
from azora_payments.db.session import Database
from azora_payments.domain import operations
from azora_payments.jobs.registry import import_kind_modules, registered_kinds
from azora_payments.logs import log_fields

logger = logging.getLogger("azora_payments.jobs.worker")


def worker(
    settings: Settings,
    *,
    modules: Sequence[str] = (),
    only: Sequence[str] = (),
    concurrency: int | None = None,
    once: bool = False,
    lease: float = 30.0,
    heartbeat: float | None = None,
    grace: float = 25.0,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> int:
    from azora_payments.jobs.worker import WorkerOptions, run_worker
    from azora_payments.services import Services

    imported = import_kind_modules(modules)
    kinds = registered_kinds()
    if only:
        kinds = {
            name: kind
            for name, kind in kinds.items()
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in only)
        }
        if not kinds:
            print(f"azora-payments: no job kind matches {' '.join(only)}", file=sys.stderr)
            return 2
    options = WorkerOptions(
        concurrency=concurrency or settings.worker_concurrency,
        poll_seconds=settings.worker_poll_seconds,
        kind_batch_size=settings.worker_batch_size,
        lease_seconds=lease,
        heartbeat_seconds=heartbeat if heartbeat is not None else lease / 3,
        grace_seconds=grace,
        once=once,
    )
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
    logger.info("job kinds loaded", extra=log_fields(modules=imported, kinds=sorted(kinds)))

    async def main() -> None:
        services = Services(settings)
        try:
            await run_worker(services, options=options, kinds=kinds)
        finally:
            await services.close()
            telemetry.shutdown()

    telemetry.setup()  # traces when OTEL_EXPORTER_OTLP_ENDPOINT is set, before the engine
    asyncio.run(main())
    return 0


def list_jobs(
    settings: Settings,
    *,
    status: str | None,
    kind: str | None,
    limit: int,
    out: TextIO = sys.stdout,
) -> int:
    async def fetch() -> list[tuple[int, str, str, int, int, str, str]]:
        db = Database(settings.database_url, pool_size=1, pooler=settings.database_pooler)
        try:
            async with db.read() as session:
                rows = await jobs_repo.list_jobs(session, status=status, kind=kind, limit=limit)
                return [
                    (
                        job.id,
                        job.kind,
                        job.status,
                        job.attempts,
                        job.max_attempts,
                        (job.last_error or "").strip().splitlines()[0]
                        if (job.last_error or "").strip()
                        else "",
                        job.updated_at.isoformat().replace("+00:00", "Z"),
                    )
                    for job in rows
                ]
        finally:
            await db.dispose()

    try:
        rows = asyncio.run(fetch())
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(exc)
    header = ("id", "kind", "status", "attempts", "updated_at", "last_error")
    table = [(str(i), k, s, f"{a}/{m}", at, err[:120]) for i, k, s, a, m, err, at in rows]
    widths = [max([len(h), *(len(r[n]) for r in table)]) for n, h in enumerate(header[:-1])]
    for line in [header, *table]:
        cells = [cell.ljust(widths[n]) for n, cell in enumerate(line[:-1])]
        print("  ".join([*cells, line[-1]]).rstrip(), file=out)
    print(f"({len(rows)} job{'s' if len(rows) != 1 else ''})", file=out)
    return 0


def retry_jobs(
    settings: Settings,
    *,
    job_ids: Sequence[int],
    all_dead: bool,
    kind: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    async def retry() -> list[int]:
        db = Database(settings.database_url, pool_size=1, pooler=settings.database_pooler)
        try:
            return await operations.retry_dead_jobs(
                db=db, job_ids=None if all_dead else job_ids, kind=kind
            )
        finally:
            await db.dispose()

    try:
        retried = asyncio.run(retry())
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(exc)
    for job_id in retried:
        print(f"job {job_id}: ready", file=out)
    missing = sorted(set(job_ids) - set(retried)) if not all_dead else []
    for job_id in missing:
        print(f"azora-payments: job {job_id} is not dead (or does not exist)", file=err)
    print(f"{len(retried)} job{'s' if len(retried) != 1 else ''} retried", file=out)
    return 1 if missing else 0


def _unavailable(exc: BaseException) -> int:
    print(
        f"azora-payments: database unavailable or not migrated: {type(exc).__name__}",
        file=sys.stderr,
    )
    return 1
