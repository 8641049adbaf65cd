"""Issue 9, item 3: after too many declines per user, card (Stripe's fingerprint) or client
address, new attempts are refused with 429 before Stripe is called; webhook-reported declines
count; replays are answered first; Redis counts when it is there and the database when it is
not (or stops answering). On both databases."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from azora_payments.services import Services
from tests.conftest import (
    STRIPE_KEY,
    asgi_client,
    emulator_settings,
    free_port,
    open_services,
)
from tests.test_payments import PROCESS, Buyer, payment_body
from tests.webhooks.conftest import run_apply_jobs, send

try:
    from azora_payments.db.models import CardDecline
except ImportError:  # pragma: no cover - only to show these tests fail on the code before them
    CardDecline = None  # type: ignore[assignment,misc]

# Five cards that decline, each its own card number (so its own fingerprint).
DECLINING = (
    "pm_card_chargeDeclined",
    "pm_card_visa_chargeDeclinedInsufficientFunds",
    "pm_card_chargeDeclinedLostCard",
    "pm_card_chargeDeclinedStolenCard",
    "pm_card_chargeDeclinedExpiredCard",
)


@contextlib.asynccontextmanager
async def stack(
    database_url: str, tmp_path: Path, emulator: str, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    settings = emulator_settings(database_url, tmp_path, emulator, **overrides)
    async with open_services(settings) as services, asgi_client(settings, services) as api:
        yield api, services


async def stripe_calls(emulator: str, only: str | None = None) -> int:
    """How many requests the emulator has served (of `only`, e.g. "POST /v1/payment_intents")."""
    async with httpx.AsyncClient() as http:
        counts: dict[str, int] = (await http.get(f"{emulator}/_azora/requests")).json()
    return counts.get(only, 0) if only else sum(counts.values())


async def pay(api: httpx.AsyncClient, buyer: Buyer, method: str, **headers: str) -> httpx.Response:
    return await api.post(
        PROCESS, json=payment_body(payment_method_id=method), headers=buyer.with_key() | headers
    )


async def save(api: httpx.AsyncClient, buyer: Buyer, method: str) -> str:
    saved = await api.post(
        "/api/payments/methods/save", json={"payment_method_id": method}, headers=buyer.headers
    )
    assert saved.status_code == 201, saved.text
    pm_id: str = saved.json()["id"]
    return pm_id


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert 0 < int(response.headers["retry-after"]) <= 3600
    assert "payment_id" not in response.json()


# ------------------------------------------------------------------ a private Redis


class PrivateRedis:
    """A redis-server of this test's own, on a free port, that the test may stop."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # No persistence: a restart is an empty Redis, as after a failover to a fresh replica.
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("AZORA_REQUIRE_PACKAGES") == "1":
            pytest.fail("redis-server is required (AZORA_REQUIRE_PACKAGES=1) but not installed")
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = PrivateRedis(binary)
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------ without Redis


async def test_too_many_declines_per_user_refuse_before_stripe(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    async with stack(database_url, tmp_path, stripe_emulator) as (api, _):
        buyer = Buyer()
        for method in DECLINING:  # five declines, five different cards
            assert (await pay(api, buyer, method)).status_code == 402
        before = await stripe_calls(stripe_emulator)
        refused = await pay(api, buyer, "pm_card_visa")
        assert_limited(refused)
        assert await stripe_calls(stripe_emulator) == before  # Stripe was not asked anything
        # Another user is not affected.
        assert (await pay(api, Buyer(), "pm_card_visa")).status_code == 201


async def test_too_many_declines_of_one_card_refuse_it_for_everyone(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    async with stack(database_url, tmp_path, stripe_emulator) as (api, _):
        buyer = Buyer()
        card = await save(api, buyer, "pm_card_chargeDeclined")
        for _ in range(3):
            assert (await pay(api, buyer, card)).status_code == 402
        before = await stripe_calls(stripe_emulator)
        assert_limited(await pay(api, buyer, card))
        assert await stripe_calls(stripe_emulator) == before
        # The same card number under another user (a new PaymentMethod, the same fingerprint).
        intents = await stripe_calls(stripe_emulator, "POST /v1/payment_intents")
        assert_limited(await pay(api, Buyer(), "pm_card_chargeDeclined"))
        assert await stripe_calls(stripe_emulator, "POST /v1/payment_intents") == intents
        # The same user's other card still goes through (3 declines < 5 for the user).
        assert (await pay(api, buyer, "pm_card_visa")).status_code == 201


async def test_too_many_declines_from_one_address(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    proxy = "203.0.113.7"  # the address asgi_client connects from
    async with stack(
        database_url,
        tmp_path,
        stripe_emulator,
        rate_limit_declines_ip="2/hour",
        trusted_proxies=[proxy],
    ) as (api, _):
        tester = {"X-Forwarded-For": "198.51.100.1"}
        for method in DECLINING[:2]:
            assert (await pay(api, Buyer(), method, **tester)).status_code == 402
        assert_limited(await pay(api, Buyer(), "pm_card_visa", **tester))
        # Another client behind the same proxy is not.
        other = {"X-Forwarded-For": "198.51.100.2"}
        assert (await pay(api, Buyer(), "pm_card_visa", **other)).status_code == 201
        # Nor is the proxy's own address ever counted (no client address to count).
        for method in DECLINING[2:]:
            assert (await pay(api, Buyer(), method)).status_code == 402
        assert (await pay(api, Buyer(), "pm_card_visa")).status_code == 201


async def test_a_replay_is_answered_before_any_limit(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    async with stack(
        database_url, tmp_path, stripe_emulator, rate_limit_declines_user="1/hour"
    ) as (api, _):
        buyer = Buyer()
        headers = buyer.with_key()
        body = payment_body(payment_method_id="pm_card_chargeDeclined")
        declined = await api.post(PROCESS, json=body, headers=headers)
        assert declined.status_code == 402
        assert_limited(await pay(api, buyer, "pm_card_visa"))
        replay = await api.post(PROCESS, json=body, headers=headers)
        assert replay.status_code == 402
        assert replay.text == declined.text
        assert replay.headers["idempotent-replayed"] == "true"


async def test_a_decline_reported_by_webhook_counts(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    """3-D Secure pending; the customer tries another card in Stripe.js, which is declined:
    Stripe tells us by webhook only, and that decline counts too."""
    async with stack(
        database_url, tmp_path, stripe_emulator, rate_limit_declines_user="1/hour"
    ) as (api, services):
        buyer = Buyer()
        pending = await pay(api, buyer, "pm_card_threeDSecure2Required")
        assert pending.json()["status"] == "requires_action"
        intent_id = pending.json()["stripe_payment_intent_id"]
        stripe_js = httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"})
        async with stripe_js:
            retried = await stripe_js.post(
                f"{stripe_emulator}/v1/payment_intents/{intent_id}/confirm",
                data={"payment_method": "pm_card_chargeDeclinedStolenCard"},
            )
            assert retried.status_code == 402
            events = (
                await stripe_js.get(
                    f"{stripe_emulator}/v1/events",
                    params={"type": "payment_intent.payment_failed", "limit": 100},
                )
            ).json()["data"]
        [failed] = [e for e in events if e["data"]["object"]["id"] == intent_id]
        assert (await send(api, failed)).status_code == 200
        assert await run_apply_jobs(services) == 1
        async with services.db.read() as session:
            [counted] = list(await session.scalars(select(CardDecline)))
        assert counted.user_id == buyer.id
        assert counted.stripe_decline_code == "stolen_card"
        assert counted.card_fingerprint  # the card tried in Stripe.js, by its fingerprint
        payment = await api.get(f"/api/payments/{pending.json()['id']}", headers=buyer.headers)
        assert payment.json()["failure"]["decline_code"] == "generic_decline"
        assert_limited(await pay(api, buyer, "pm_card_visa"))
        # The same event again (Stripe retries deliveries) does not count twice.
        async with services.db.transaction() as session:
            await session.execute(delete(CardDecline))
        assert (await send(api, failed)).status_code == 200
        await run_apply_jobs(services)
        async with services.db.read() as session:
            assert await session.scalar(select(func.count()).select_from(CardDecline)) == 0


# ------------------------------------------------------------------ with Redis


async def test_with_redis_the_counts_are_redis_s(
    database_url: str, tmp_path: Path, stripe_emulator: str, private_redis: PrivateRedis
) -> None:
    async with stack(database_url, tmp_path, stripe_emulator, redis_url=private_redis.url) as (
        api,
        services,
    ):
        buyer = Buyer()
        card = await save(api, buyer, "pm_card_chargeDeclined")
        for _ in range(3):
            assert (await pay(api, buyer, card)).status_code == 402
        # Only Redis can know now.
        async with services.db.transaction() as session:
            await session.execute(delete(CardDecline))
        before = await stripe_calls(stripe_emulator)
        assert_limited(await pay(api, buyer, card))
        assert await stripe_calls(stripe_emulator) == before


async def test_redis_going_away_never_lets_attempts_through(
    database_url: str, tmp_path: Path, stripe_emulator: str, private_redis: PrivateRedis
) -> None:
    async with stack(database_url, tmp_path, stripe_emulator, redis_url=private_redis.url) as (
        api,
        services,
    ):
        buyer = Buyer()
        card = await save(api, buyer, "pm_card_chargeDeclined")
        for _ in range(2):  # counted in Redis (and recorded in the database)
            assert (await pay(api, buyer, card)).status_code == 402
        private_redis.stop()
        assert (await pay(api, buyer, card)).status_code == 402  # recorded in the database
        before = await stripe_calls(stripe_emulator)
        assert_limited(await pay(api, buyer, card))
        assert await stripe_calls(stripe_emulator) == before
        # Redis back, empty: the declines made while it was away still count.
        private_redis.start()
        assert_limited(await pay(api, buyer, card))
        async with services.db.read() as session:
            assert await session.scalar(select(func.count()).select_from(CardDecline)) == 3


async def test_after_an_outage_every_process_counts_in_the_database(
    database_url: str, tmp_path: Path, stripe_emulator: str, private_redis: PrivateRedis
) -> None:
    """Two processes share Redis and the database; only one of them saw Redis go away. Once
    Redis is back (empty), the other must not trust its counts either."""
    overrides = {"redis_url": private_redis.url}
    async with (
        stack(database_url, tmp_path, stripe_emulator, **overrides) as (first, _),
        stack(database_url, tmp_path, stripe_emulator, **overrides) as (second, _),
    ):
        buyer = Buyer()
        card = await save(first, buyer, "pm_card_chargeDeclined")
        for _ in range(2):
            assert (await pay(first, buyer, card)).status_code == 402
        private_redis.stop()
        assert (await pay(first, buyer, card)).status_code == 402  # only in the database
        private_redis.start()  # empty: the three declines are in the database alone
        assert_limited(await pay(first, buyer, card))  # and the first leaves its mark
        before = await stripe_calls(stripe_emulator)
        assert_limited(await pay(second, buyer, card))
        assert await stripe_calls(stripe_emulator) == before


async def test_declines_older_than_every_window_are_purged(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from azora_payments.db.types import utcnow
    from azora_payments.jobs.registry import JobContext, get_kind, import_kind_modules

    async with stack(database_url, tmp_path, stripe_emulator) as (api, services):
        for method in DECLINING[:2]:
            assert (await pay(api, Buyer(), method)).status_code == 402
        async with services.db.transaction() as session:
            oldest = await session.scalar(select(func.min(CardDecline.id)))
            await session.execute(
                update(CardDecline)
                .where(CardDecline.id == oldest)
                .values(at=utcnow() - timedelta(hours=1, minutes=1))
            )
        import_kind_modules()
        context = JobContext(
            services=services,
            job_id=0,
            kind="declines.purge",
            attempt=1,
            max_attempts=3,
            scheduled_for=utcnow(),
            worker_id="test",
        )
        await get_kind("declines.purge").handler(context, {})
        async with services.db.read() as session:
            left = list(await session.scalars(select(CardDecline.id)))
        assert len(left) == 1
        assert oldest not in left
