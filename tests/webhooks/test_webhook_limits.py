"""The webhook endpoint's own guards (API.md, Stripe webhooks): bodies over
WEBHOOK_MAX_BODY_BYTES are 413 before any signature work, and an address whose requests keep
failing the size or signature check is limited (RATE_LIMIT_WEBHOOK_FAILURES), while verified
deliveries are never counted, so Stripe's bursts go through."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from azora_payments.config import Settings
from azora_payments.services import Services
from tests.conftest import asgi_client, make_settings, services_fixture
from tests.webhooks.conftest import WEBHOOK_PATH, event, intent_obj, send, sign

STRIPE_ADDRESS = ("3.18.12.63", 443)
ATTACKER = ("198.51.100.66", 443)


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


@pytest.fixture
def limit_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        receipt_storage=str(tmp_path / "receipts"),
        rate_limit_webhook_failures="5/minute",
    )


limit_services = services_fixture("limit_settings", name="limit_services")


@pytest.fixture
def verifications(limit_services: Services, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bodies reached signature verification (a spy on the real check)."""
    seen: list[int] = []
    real = limit_services.stripe.verify_event

    def spy(payload: bytes, signature: str, secrets: list[str]) -> dict[str, Any]:
        seen.append(len(payload))
        return real(payload, signature, secrets)

    monkeypatch.setattr(limit_services.stripe, "verify_event", spy)
    return seen


def padded_event(size: int) -> bytes:
    """A well-formed, signed-able event of about `size` bytes (the padding in metadata)."""
    evt = event("payment_intent.processing", intent_obj("pi_padded", status="processing"))
    evt["data"]["object"]["metadata"] = {"pad": "x" * size}
    return json.dumps(evt).encode()


def signed_headers(body: bytes) -> dict[str, str]:
    return {"Stripe-Signature": sign(body), "Content-Type": "application/json"}


async def test_a_body_over_the_webhook_limit_is_413_before_signature_work(
    limit_settings: Settings, limit_services: Services, verifications: list[int]
) -> None:
    assert limit_settings.webhook_max_body_bytes == 512 * 1024
    async with asgi_client(limit_settings, limit_services, client_addr=STRIPE_ADDRESS) as http:
        small = padded_event(10_000)
        assert (
            await http.post(WEBHOOK_PATH, content=small, headers=signed_headers(small))
        ).status_code == 200
        # Well under MAX_BODY_BYTES (1 MiB), and correctly signed: still no Stripe event.
        big = padded_event(600 * 1024)
        response = await http.post(WEBHOOK_PATH, content=big, headers=signed_headers(big))
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "payload_too_large"

        async def stream() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 64 * 1024):
                yield big[start : start + 64 * 1024]

        streamed = await http.post(WEBHOOK_PATH, content=stream(), headers=signed_headers(big))
        assert streamed.status_code == 413
    assert verifications == [len(small)]


async def test_failed_requests_limit_their_address_only(
    limit_settings: Settings, limit_services: Services, verifications: list[int]
) -> None:
    async with (
        asgi_client(limit_settings, limit_services, client_addr=ATTACKER) as attacker,
        asgi_client(limit_settings, limit_services, client_addr=STRIPE_ADDRESS) as stripe,
    ):
        forged = b'{"id": "evt_forged"}'
        for _ in range(5):
            bad = await attacker.post(
                WEBHOOK_PATH, content=forged, headers={"Stripe-Signature": "t=1,v1=00"}
            )
            assert bad.status_code == 400
        tried = len(verifications)
        limited = await attacker.post(
            WEBHOOK_PATH, content=forged, headers={"Stripe-Signature": "t=1,v1=00"}
        )
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert 0 < int(limited.headers["Retry-After"]) <= 60
        too_big = await attacker.post(WEBHOOK_PATH, content=b"x" * (600 * 1024))
        assert too_big.status_code == 429
        assert len(verifications) == tried  # refused before any HMAC

        # Stripe's address, meanwhile: a burst far over the failure limit, all delivered.
        for n in range(30):
            evt = event(
                "payment_intent.processing", intent_obj(f"pi_burst{n}", status="processing")
            )
            assert (await send(stripe, evt)).status_code == 200


async def test_verified_deliveries_do_not_count_as_failures(
    limit_settings: Settings, limit_services: Services
) -> None:
    async with asgi_client(limit_settings, limit_services, client_addr=STRIPE_ADDRESS) as http:
        for n in range(20):
            evt = event("payment_intent.processing", intent_obj(f"pi_ok{n}", status="processing"))
            assert (await send(http, evt)).status_code == 200
        # A secret rotated on one side only: those fail and count, up to the limit.
        statuses = []
        for n in range(6):
            evt = event("payment_intent.processing", intent_obj(f"pi_rot{n}", status="processing"))
            statuses.append((await send(http, evt, secret="whsec_" + "0" * 24)).status_code)
        assert statuses == [400] * 5 + [429]
