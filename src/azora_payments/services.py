"""The long-lived parts of one process (database, Redis, token verifier, rate limiter), built
once from the settings and shared by the API, the worker and the commands."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from azora_payments.auth import TokenVerifier
from azora_payments.config import Settings
from azora_payments.db.session import Database
from azora_payments.domain.idempotency import IdempotencyKeys
from azora_payments.ratelimit import RateLimiter
from azora_payments.storage import storage_for
from azora_payments.stripe_gateway import StripeGateway

logger = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.database_pool_size)
        self.redis: aioredis.Redis | None = (
            aioredis.from_url(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
            if settings.redis_url
            else None
        )
        self.verifier = TokenVerifier(settings)
        self.limiter = RateLimiter(settings.redis_url)
        self.stripe = StripeGateway(settings)
        # One client for the process: obstore's S3 client keeps its connections.
        self.storage = storage_for(settings.receipt_storage)
        self.idempotency = IdempotencyKeys(
            db=self.db,
            redis=self.redis,
            lock_seconds=settings.idempotency_lock_seconds,
            ttl_hours=settings.idempotency_key_ttl_hours,
        )

    async def redis_status(self) -> str:
        if self.redis is None:
            return "not_configured"
        try:
            await self.redis.ping()
        except Exception:
            return "unavailable"
        return "ok"

    async def close(self) -> None:
        await self.stripe.close()
        await self.limiter.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()
