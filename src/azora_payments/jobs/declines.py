"""Forgets recorded card declines once they are older than every decline limit's window."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from azora_payments.jobs.registry import JobContext, scheduled_job
from azora_payments.logs import log_fields

logger = logging.getLogger(__name__)


@scheduled_job("declines.purge", every=timedelta(hours=1))
async def purge_old_declines(ctx: JobContext, payload: dict[str, Any]) -> None:
    removed = await ctx.services.declines.purge()
    logger.info("old card declines removed", extra=log_fields(removed=removed))
