"""Rate limits per user (after authentication) and per client address (before it), counted in
memory or in Redis; an unreachable Redis lets requests through."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from limits import parse

from azora_payments.app import create_app
from azora_payments.config import Settings
from azora_payments.devstack.processes import running_servers
from azora_payments.errors import RateLimited
from azora_payments.ratelimit import RateLimiter
from azora_payments.services import Services
from tests.conftest import (
    app_client,
    bearer,
    free_port,
    make_settings,
    make_token,
    over_asgi,
    server_env,
)

AUDIT = "/api/audit"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


def unique(prefix: str) -> str:
    # Redis counts outlive a test run: every test counts its own keys.
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def random_ip() -> str:
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["type"] == "https://docs.azora.dev/errors/rate_limited"
    assert body["request_id"] == response.headers["x-request-id"]
    assert 1 <= int(response.headers["retry-after"]) <= 60


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def storage(request: pytest.FixtureRequest) -> str | None:
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


# ---------------------------------------------------------------- per user


async def test_per_user_limit(database_url: str, storage: str | None) -> None:
    settings = make_settings(database_url, rate_limit_user="3/minute", redis_url=storage)
    first, second = unique("ops"), unique("ops")
    async with app_client(settings) as http:
        for _ in range(3):
            ok = await http.get(AUDIT, headers=bearer(make_token(first, roles=["admin"])))
            assert ok.status_code == 200
        assert_rate_limited(
            await http.get(AUDIT, headers=bearer(make_token(first, roles=["admin"])))
        )
        # Another user, from the same address, is not affected.
        ok = await http.get(AUDIT, headers=bearer(make_token(second, roles=["admin"])))
        assert ok.status_code == 200


async def test_per_user_limit_counts_after_authentication(database_url: str) -> None:
    settings = make_settings(database_url, rate_limit_user="2/minute")
    victim = unique("user")
    async with app_client(settings) as http:
        # Forged tokens naming the victim do not use up the victim's allowance.
        forged = make_token(victim, secret="not-our-secret-" + "x1y2z3" * 6)
        for _ in range(5):
            assert (await http.get(AUDIT, headers=bearer(forged))).status_code == 401
        token = bearer(make_token(victim, roles=["admin"]))
        assert (await http.get(AUDIT, headers=token)).status_code == 200


def test_limit_shared_through_redis_between_processes(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Two `serve` processes with one Redis share the count: neither has it in its memory.
    settings = make_settings(database_url, redis_url=redis_url)
    env = server_env(settings, RATE_LIMIT_USER="2/minute")
    token = bearer(make_token(unique("ops"), roles=["admin"]))
    with running_servers(env, tmp_path, count=2) as (one, two):
        assert one.pid != two.pid
        with httpx.Client(timeout=10) as http:
            assert http.get(one.url + AUDIT, headers=token).status_code == 200
            assert http.get(two.url + AUDIT, headers=token).status_code == 200
            assert_rate_limited(http.get(one.url + AUDIT, headers=token))
            assert_rate_limited(http.get(two.url + AUDIT, headers=token))


async def test_unreachable_redis_counts_in_the_process_instead(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Not failing open: without Redis the limit still holds, counted by this process alone.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(
        database_url, rate_limit_user="2/minute", rate_limit_ip="100/minute", redis_url=dead
    )
    token = bearer(make_token(unique("ops"), roles=["admin"]))
    with caplog.at_level(logging.WARNING, logger="azora_payments"):
        async with app_client(settings) as http:
            answers = [(await http.get(AUDIT, headers=token)).status_code for _ in range(3)]
            breaker = http._transport.app.state.services.redis_breaker  # type: ignore[attr-defined]
    assert answers == [200, 200, 429]
    # The first failure opened the breaker: Redis was not waited for again.
    assert breaker.failures == 1
    assert breaker.skipped >= 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("counted in this process" in m for m in messages)
    assert any("skipping it" in m for m in messages)


async def test_limiter_directly(redis_url: str) -> None:
    limiter = RateLimiter(redis_url)
    key = unique("direct")
    try:
        await limiter.check("2/minute", "t", key)
        await limiter.check("2/minute", "t", key)
        with pytest.raises(RateLimited) as info:
            await limiter.check("2/minute", "t", key)
        assert 1 <= int(info.value.headers["Retry-After"]) <= 60
        await limiter.check("2/minute", "t", unique("direct"))
    finally:
        await limiter.close()
    # Already a parsed item, and an `async+` URL, work too; memory storage has nothing to close.
    again = RateLimiter("async+" + redis_url)
    try:
        await again.check(parse("1/minute"), "t", key)
        with pytest.raises(RateLimited):
            await again.check(parse("2/minute"), "t", key)
    finally:
        await again.close()
    await RateLimiter(None).close()


# ---------------------------------------------------------------- per client address


@pytest.fixture
def ip_settings(database_url: str, storage: str | None) -> Settings:
    return make_settings(
        database_url, rate_limit_ip="3/minute", redis_url=storage, trusted_proxies="10.0.0.1"
    )


@pytest.fixture
async def ip_services(ip_settings: Settings) -> AsyncIterator[Services]:
    svc = Services(ip_settings)
    yield svc
    await svc.limiter.close()
    await svc.close()


def client_for(app: Any, address: str) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    return over_asgi(app, client_addr=(address, 4000))


async def test_per_ip_limit_comes_before_authentication(
    ip_settings: Settings, ip_services: Services, operator_headers: dict[str, str]
) -> None:
    app = create_app(ip_settings, services=ip_services)
    flooder, neighbour = random_ip(), random_ip()
    async with client_for(app, flooder) as http:
        for _ in range(3):
            assert (await http.get(AUDIT)).status_code == 401
        # Over the limit: refused before the token is even looked at, whatever the route.
        assert_rate_limited(await http.get(AUDIT, headers=operator_headers))
        assert_rate_limited(await http.get("/nope"))
        assert_rate_limited(await http.post(AUDIT, content=b"{}"))
        # Probes and scrapes are never limited.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(path)).status_code == 200
    async with client_for(app, neighbour) as http:
        assert (await http.get(AUDIT, headers=operator_headers)).status_code == 200


async def test_per_ip_limit_counts_clients_behind_our_proxy(
    ip_settings: Settings, ip_services: Services, operator_headers: dict[str, str]
) -> None:
    app = create_app(ip_settings, services=ip_services)
    first, second = random_ip(), random_ip()
    async with client_for(app, "10.0.0.1") as proxy:
        for _ in range(3):
            headers = {**operator_headers, "X-Forwarded-For": first}
            assert (await proxy.get(AUDIT, headers=headers)).status_code == 200
        assert_rate_limited(
            await proxy.get(AUDIT, headers={**operator_headers, "X-Forwarded-For": first})
        )
        headers = {**operator_headers, "X-Forwarded-For": second}
        assert (await proxy.get(AUDIT, headers=headers)).status_code == 200


async def test_no_ip_limit_without_services(database_url: str) -> None:
    # Before the lifespan has built the services, the edge cannot count: it lets requests pass
    # on to the app (which has nothing to serve them with but the probes).
    settings = make_settings(database_url, rate_limit_ip="1/minute")
    app = create_app(settings)
    async with client_for(app, random_ip()) as http:
        for _ in range(3):
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/nope")).status_code == 404
