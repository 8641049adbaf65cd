"""Job kinds that close PaymentIntents at Stripe: a failed payment's (queued when it fails)
and the scheduled cancel of abandoned 3-D Secure payments."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from azora_payments.domain import intents
from azora_payments.domain.outcomes import CLOSE_INTENT
from azora_payments.jobs.registry import JobContext, job_kind, scheduled_job
from azora_payments.logs import log_fields

logger = logging.getLogger(__name__)


@job_kind(CLOSE_INTENT, max_attempts=20, timeout=60.0, backoff_base=5.0, backoff_cap=1800.0)
async def close_failed_intent(ctx: JobContext, payload: dict[str, Any]) -> None:
    services = ctx.services
    payment_id = str(payload["payment_id"])
    for change in await intents.close_failed(
        db=services.db, stripe=services.stripe, payment_id=payment_id
    ):
        logger.info("intent closed", extra=log_fields(job_id=ctx.job_id, change=change))


@scheduled_job("payments.expire_requires_action", every=timedelta(minutes=15), timeout=240.0)
async def expire_requires_action(ctx: JobContext, payload: dict[str, Any]) -> None:
    services = ctx.services
    for change in await intents.expire_requires_action(
        db=services.db,
        stripe=services.stripe,
        after_hours=services.settings.requires_action_expires_hours,
    ):
        logger.info("abandoned payment", extra=log_fields(job_id=ctx.job_id, change=change))
