"""Rate limits per user and per client address, counted in Redis when there is one.

Counting is a guard, not a source of truth: when Redis fails, requests are let through and the
failure is logged, rather than turning a cache outage into a payment outage.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter

from azora_payments.errors import RateLimited

logger = logging.getLogger(__name__)


# A guard must not become the slow part of a request: give up on Redis quickly.
REDIS_TIMEOUT_SECONDS = 0.5


def redis_storage(redis_url: str) -> RedisStorage:
    """A `limits` storage on Redis that gives up quickly."""
    uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
    return RedisStorage(
        uri,
        implementation="redispy",
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )


def _redis_client(storage: Storage) -> Any:
    return getattr(getattr(storage, "bridge", None), "storage", None)


async def close_storage(storage: Storage) -> None:
    """Close a storage's Redis connections (the `limits` storage has no close of its own)."""
    client = _redis_client(storage)
    if client is not None:
        await client.aclose()


async def drop_connections(storage: Storage) -> None:
    """Forget a storage's pooled Redis connections (dead after Redis restarted)."""
    client = _redis_client(storage)
    if client is not None:
        await client.connection_pool.disconnect()


class RateLimiter:
    def __init__(self, redis_url: str | None) -> None:
        storage: Storage = redis_storage(redis_url) if redis_url else MemoryStorage()
        self._storage = storage
        self._limiter = FixedWindowRateLimiter(storage)

    async def close(self) -> None:
        await close_storage(self._storage)

    async def check(self, limit: str | RateLimitItem, *key: str) -> None:
        item = parse(limit) if isinstance(limit, str) else limit
        try:
            allowed = await self._limiter.hit(item, *key)
            if allowed:
                return
            stats = await self._limiter.get_window_stats(item, *key)
        except Exception:
            logger.warning("rate-limit storage unavailable; request let through", exc_info=True)
            return
        raise RateLimited(math.ceil(stats.reset_time - time.time()))
