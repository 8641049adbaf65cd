"""Forgets idempotency keys older than `IDEMPOTENCY_KEY_TTL_HOURS`, once an hour."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from azora_payments.jobs.registry import JobContext, scheduled_job
from azora_payments.logs import log_fields

logger = logging.getLogger(__name__)


@scheduled_job("idempotency.purge", every=timedelta(hours=1))
async def purge_expired_keys(ctx: JobContext, payload: dict[str, Any]) -> None:
    removed = await ctx.services.idempotency.purge_expired()
    logger.info("expired idempotency keys removed", extra=log_fields(removed=removed))
