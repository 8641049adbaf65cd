"""A frozen Redis (SIGSTOP: connections accepted, nothing answered) costs a payment one short
wait at most, not a timeout per Redis call: the breaker skips Redis until it answers again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from azora_payments.redis_guard import Breaker
from tests.conftest import asgi_client, bearer, emulator_settings, make_token, open_services
from tests.private_services import PrivateRedis
from tests.test_payments import payment_body

pytestmark = pytest.mark.redis


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


async def _pay(http: httpx.AsyncClient, headers: dict[str, str], count: int) -> float:
    started = time.monotonic()
    for _ in range(count):
        response = await http.post(
            "/api/payments/process",
            json=payment_body(),
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "succeeded"
    return time.monotonic() - started


async def test_payments_skip_a_frozen_redis_and_use_it_again_once_it_answers(
    sqlite_database_url: str, tmp_path: Path, stripe_emulator: str, private_redis: PrivateRedis
) -> None:
    settings = emulator_settings(
        sqlite_database_url, tmp_path, stripe_emulator, redis_url=private_redis.url
    )
    headers = bearer(make_token(f"user_{uuid.uuid4().hex[:8]}"))
    async with open_services(settings) as services, asgi_client(settings, services) as http:
        breaker: Breaker = services.redis_breaker
        await _pay(http, headers, 1)  # connections made, the code paths warm
        healthy = await _pay(http, headers, 5)
        assert breaker.failures == 0
        private_redis.freeze()
        try:
            frozen = await _pay(http, headers, 5)
            # Four Redis calls a payment (two rate-limit counts, the cached answer read and
            # write): without the breaker each waits out its timeout, 20 waits here. With it,
            # one call a window tries Redis: one in all, unless a loaded machine made the five
            # payments outlast the window (a run at load 10 saw 2 for that reason).
            windows = 1 + int(frozen // breaker.open_seconds)
            assert 1 <= breaker.failures <= windows, (breaker.failures, frozen)
            assert breaker.skipped >= 20 - breaker.failures
            assert breaker.is_open
            # Generous for a loaded machine; without the breaker this took 20 timeouts more.
            assert frozen < 2 * healthy + 1.5, (frozen, healthy)
        finally:
            private_redis.thaw()
        await asyncio.sleep(breaker.open_seconds)  # then the next call tries Redis again
        await _pay(http, headers, 1)
        assert not breaker.is_open
        ready = await http.get("/readyz")
        assert ready.json()["redis"] == "ok"


async def test_the_breaker_judges_redis_only_by_whether_it_answers(
    private_redis: PrivateRedis,
) -> None:
    from redis.exceptions import ResponseError

    from azora_payments.redis_guard import BreakerOpen, guarded_client

    breaker = Breaker(open_seconds=60)
    client = guarded_client(private_redis.url, breaker)
    try:
        await client.set("azora:test:text", "not a number")
        with pytest.raises(ResponseError):  # an error of the command: Redis is up
            await client.incr("azora:test:text")
        assert not breaker.is_open
        private_redis.freeze()
        try:
            task = asyncio.create_task(client.get("azora:test:text"))
            await asyncio.sleep(0.05)
            task.cancel()  # cancelled mid-call: no verdict either way
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not breaker.is_open
            with pytest.raises(Exception, match="Timeout"):
                await client.get("azora:test:text")
            assert breaker.is_open
            with pytest.raises(BreakerOpen):
                await client.get("azora:test:text")
        finally:
            private_redis.thaw()
    finally:
        await client.aclose()
