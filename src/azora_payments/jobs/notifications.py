"""Delivers notifications to the product's backend (NOTIFY_URL) until it answers 2xx, with
backoff for about three days, then the job is dead and `jobs retry` can send it again."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from azora_payments.db.repositories import notifications as notifications_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import notifications
from azora_payments.jobs.registry import JobContext, job_kind
from azora_payments.logs import log_fields

logger = logging.getLogger(__name__)

# 60 s doubling to a 6 h cap: 26 attempts span a little over three days even with jitter.
ATTEMPTS = 26


class DeliveryFailed(Exception):
    """The backend did not take the notification (a non-2xx answer)."""


@job_kind(
    notifications.DELIVER,
    max_attempts=ATTEMPTS,
    timeout=30.0,
    backoff_base=60.0,
    backoff_cap=6 * 3600.0,
)
async def deliver(ctx: JobContext, payload: dict[str, Any]) -> None:
    settings = ctx.services.settings
    if not settings.notify_url or not settings.notify_secret:
        return
    db = ctx.services.db
    async with db.read() as session:
        notification = await notifications_repo.get(session, str(payload["id"]))
    if notification is None or notification.delivered_at is not None:
        return
    body = notifications.body_of(notification)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Azora-Payments",
        notifications.SIGNATURE_HEADER: notifications.sign(body, settings.notify_secret),
    }
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.post(settings.notify_url, content=body, headers=headers)
        delivered = 200 <= response.status_code < 300
        outcome = str(response.status_code)
    except httpx.HTTPError as exc:
        delivered, outcome = False, type(exc).__name__
    async with db.transaction() as session:
        row = await notifications_repo.get(session, notification.id)
        assert row is not None
        row.attempts += 1
        if delivered and row.delivered_at is None:
            row.delivered_at = utcnow()
    logger.info(
        "notification delivery",
        extra=log_fields(notification=notification.id, type=notification.type, outcome=outcome),
    )
    if not delivered:
        raise DeliveryFailed(f"the backend answered {outcome}")
