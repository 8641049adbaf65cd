"""Redis as an optional accelerator: short timeouts, no retries, and a breaker that skips it
for a while after it fails, so a frozen or lost Redis costs one short wait, not one per call.

Everything kept in Redis (cached idempotent answers, shared rate-limit counts) has a fallback
(the database, per-process counts); what must not happen is every request waiting for it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from azora_payments import metrics

logger = logging.getLogger(__name__)

# Redis answers in well under a millisecond on a LAN: a quarter second is already a failure.
TIMEOUT_SECONDS = 0.25
# After a failure Redis is not asked again for this long; then one call tries it.
OPEN_SECONDS = 5.0


def client_options() -> dict[str, Any]:
    """Options for a redis-py client: fail fast, once (redis-py retries 3 times by default)."""
    return {
        "socket_timeout": TIMEOUT_SECONDS,
        "socket_connect_timeout": TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),
    }


class Breaker:
    """Closed (use Redis), open (skip it) for `open_seconds` after a failure, then one probe.

    One per process, shared by every Redis user in it: the first to see Redis fail saves the
    others the wait. `allow()` is asked before a call, `record(ok)` after it.
    """

    def __init__(self, *, open_seconds: float = OPEN_SECONDS) -> None:
        self.open_seconds = open_seconds
        self._open_until = 0.0
        self._probing = False
        self.failures = 0
        self.skipped = 0

    @property
    def is_open(self) -> bool:
        return self._open_until > 0.0

    def allow(self) -> bool:
        if self._open_until == 0.0:
            return True
        if self._probing or time.monotonic() < self._open_until:
            self.skipped += 1
            return False
        self._probing = True  # this caller tries Redis; the others keep skipping meanwhile
        return True

    def abandon(self) -> None:
        self._probing = False

    def record(self, ok: bool) -> None:
        self._probing = False
        if ok:
            if self._open_until:
                logger.info("redis answers again: using it")
            self._open_until = 0.0
            metrics.REDIS_BREAKER_OPEN.set(0)
            return
        self.failures += 1
        if not self._open_until:
            logger.warning("redis failed: skipping it for %.0f s", self.open_seconds)
        self._open_until = time.monotonic() + self.open_seconds
        metrics.REDIS_BREAKER_OPEN.set(1)


class BreakerOpen(RedisConnectionError):
    """Redis was skipped: its breaker is open (callers treat it as Redis being down)."""


class GuardedRedis(aioredis.Redis):
    """A redis-py client whose commands go through a `Breaker`."""

    breaker: Breaker

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if not self.breaker.allow():
            raise BreakerOpen("redis skipped: it failed recently")
        try:
            result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self.breaker.record(False)
            raise
        except Exception:
            self.breaker.record(True)  # Redis answered, with an error of the command's own
            raise
        except BaseException:
            self.breaker.abandon()  # cancelled: no verdict on Redis
            raise
        self.breaker.record(True)
        return result


def guarded_client(url: str, breaker: Breaker) -> GuardedRedis:
    # `from_url` builds an instance of the class it is called on.
    client = cast(GuardedRedis, GuardedRedis.from_url(url, **client_options()))
    client.breaker = breaker
    return client
