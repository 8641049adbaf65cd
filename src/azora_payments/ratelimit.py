"""Rate limits per user and per client address, counted in Redis when there is one.

Counting is a guard, not a source of truth: when Redis fails, or its breaker is open, this
process counts on its own for a while, rather than turning a cache outage into a payment outage
(or into a wait for Redis on every request).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Any

from limits import RateLimitItem
from limits import parse as parse_limit
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter

from azora_payments.errors import RateLimited
from azora_payments.redis_guard import Breaker, client_options

logger = logging.getLogger(__name__)


# The limits are a handful of strings from the settings, checked on every request (the webhook's
# failure limit on every delivery): parsed once each, not per request.
parse = functools.lru_cache(maxsize=64)(parse_limit)


def redis_storage(redis_url: str) -> RedisStorage:
    """A `limits` storage on Redis that gives up quickly: a guard must not become the slow part
    of a request."""
    uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
    return RedisStorage(uri, implementation="redispy", **client_options())


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
    def __init__(self, redis_url: str | None, *, breaker: Breaker | None = None) -> None:
        storage: Storage = redis_storage(redis_url) if redis_url else MemoryStorage()
        self._storage = storage
        self._limiter = FixedWindowRateLimiter(storage)
        self._breaker = breaker or Breaker()
        self._local = FixedWindowRateLimiter(MemoryStorage())

    async def close(self) -> None:
        await close_storage(self._storage)

    async def check(self, limit: str | RateLimitItem, *key: str) -> None:
        item = parse(limit) if isinstance(limit, str) else limit
        limiter = self._limiter
        shared = isinstance(self._storage, RedisStorage)
        if shared and not self._breaker.allow():
            limiter = self._local
        try:
            allowed = await limiter.hit(item, *key)
            if not allowed:
                stats = await limiter.get_window_stats(item, *key)
        except Exception:
            self._breaker.record(False)
            logger.warning("rate-limit storage unavailable; counted in this process", exc_info=True)
            limiter = self._local
            allowed = await limiter.hit(item, *key)
            if not allowed:
                stats = await limiter.get_window_stats(item, *key)
        else:
            if shared and limiter is self._limiter:
                self._breaker.record(True)
        if allowed:
            return
        raise RateLimited(math.ceil(stats.reset_time - time.time()))

    async def exhausted(self, limit: str, *key: str) -> RateLimited | None:
        """The refusal due when `key` has used up `limit`, without counting this request: for
        limits that count only some outcomes (failures), hit afterwards with `count`."""
        item = parse(limit)
        try:
            if await self._limiter.test(item, *key):
                return None
            stats = await self._limiter.get_window_stats(item, *key)
        except Exception:
            logger.warning("rate-limit storage unavailable; request let through", exc_info=True)
            return None
        return RateLimited(math.ceil(stats.reset_time - time.time()))

    async def count(self, limit: str, *key: str) -> None:
        try:
            await self._limiter.hit(parse(limit), *key)
        except Exception:
            logger.warning("rate-limit storage unavailable; hit not counted", exc_info=True)
