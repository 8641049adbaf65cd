"""`jobs.cleanup`: the queue's own housekeeping, deleting finished jobs after a week."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from azora_payments.db.repositories import jobs as jobs_repo
from azora_payments.db.types import utcnow
from azora_payments.jobs.registry import JobContext, scheduled_job
from azora_payments.logs import log_fields

logger = logging.getLogger(__name__)

KEEP_DONE = timedelta(days=7)
BATCH = 5_000
# A bounded run: a huge backlog is worked off over several slots rather than in one long
# transaction that would hold locks for minutes.
MAX_BATCHES = 20


@scheduled_job("jobs.cleanup", every=timedelta(hours=1), timeout=300.0)
async def cleanup_done_jobs(ctx: JobContext, payload: dict[str, Any]) -> None:
    before = utcnow() - KEEP_DONE
    total = 0
    for _ in range(MAX_BATCHES):
        async with ctx.services.db.transaction() as session:
            deleted = await jobs_repo.delete_finished_before(session, before=before, limit=BATCH)
        total += deleted
        if deleted < BATCH:
            break
    logger.info("finished jobs deleted", extra=log_fields(job_id=ctx.job_id, deleted=total))
