"""`checkout.expire`: open checkout sessions past their expiry, with no payment under way, are
marked `expired` once a minute (the pay endpoint refuses new attempts at the expiry itself)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from azora_payments.db.repositories import checkout as checkout_repo
from azora_payments.db.types import utcnow
from azora_payments.domain.payments import UNSETTLED
from azora_payments.jobs.registry import JobContext, scheduled_job
from azora_payments.logs import log_fields
from azora_payments.services import Services

logger = logging.getLogger(__name__)

BATCH = 1_000
MAX_BATCHES = 20


async def expire_due_sessions(services: Services) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        async with services.db.transaction() as session:
            expired = await checkout_repo.expire_due(
                session, now=utcnow(), unsettled=UNSETTLED, limit=BATCH
            )
        total += expired
        if expired < BATCH:
            break
    return total


@scheduled_job("checkout.expire", every=timedelta(minutes=1))
async def expire_sessions(ctx: JobContext, payload: dict[str, Any]) -> None:
    expired = await expire_due_sessions(ctx.services)
    if expired:
        logger.info("checkout sessions expired", extra=log_fields(expired=expired))
