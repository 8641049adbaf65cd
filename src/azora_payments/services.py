"""The long-lived parts of one process (database, Redis, token verifier, rate limiter), built
once from the settings and shared by the API, the worker and the commands."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from azora_payments.api import answers
from azora_payments.auth import TokenVerifier
from azora_payments.config import Settings
from azora_payments.db.session import Database
from azora_payments.domain.declines import DeclineLimits
from azora_payments.domain.idempotency import IdempotencyKeys
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.mail import Mailer
from azora_payments.ratelimit import RateLimiter
from azora_payments.redis_guard import Breaker, guarded_client
from azora_payments.storage import storage_for
from azora_payments.stripe_gateway import StripeGateway as RealStripeGateway

logger = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings, *, stripe: StripeGateway | None = None) -> None:
        """`stripe` stands in for the real gateway (a test's fake); by default the real one."""
        self.settings = settings
        self.db = Database(
            settings.database_url,
            pool_size=settings.database_pool_size,
            pooler=settings.database_pooler,
        )
        # One breaker for every Redis user in the process: whoever sees Redis fail first saves
        # the others the wait.
        self.redis_breaker = Breaker()
        self.redis: aioredis.Redis | None = (
            guarded_client(settings.redis_url, self.redis_breaker) if settings.redis_url else None
        )
        self.verifier = TokenVerifier(settings)
        self.limiter = RateLimiter(settings.redis_url, breaker=self.redis_breaker)
        self.stripe: StripeGateway = stripe or RealStripeGateway(settings)
        self.declines = DeclineLimits(db=self.db, settings=settings)
        # One client for the process: obstore's S3 client keeps its connections.
        self.storage = storage_for(settings.receipt_storage)
        # One for the process too: it builds its TLS context (the CA store read) once.
        self.mailer = Mailer(smtp_url=settings.smtp_url, outbox_dir=settings.mail_outbox_dir)
        # The keys store what api/ renders (api/answers.py), whoever finishes a flow.
        answers.install()
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
        await self.declines.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()
