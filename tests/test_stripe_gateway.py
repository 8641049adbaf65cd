"""The gateway's error mapping, retries and timeouts, against the emulator at the HTTP level."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from azora_payments.errors import InternalError, StripeUnavailable
from azora_payments.stripe_gateway import (
    CardDeclined,
    StripeGateway,
    StripeRejected,
    friendly_card_message,
)
from tests.conftest import (
    emulator_clear_faults,
    emulator_count,
    emulator_customers_for,
    emulator_faults,
    make_settings,
    unique_user,
)

PI_PATH = "^/v1/customers$"


@pytest.fixture
async def gateway(stripe_emulator: str, tmp_path: Path) -> AsyncIterator[StripeGateway]:
    settings = make_settings(
        f"sqlite:///{tmp_path}/unused.db",
        stripe_api_base=stripe_emulator,
        stripe_max_network_retries=2,
        stripe_timeout_seconds=0.5,
    )
    gateway = StripeGateway(settings, initial_retry_delay=0.01)
    yield gateway
    await gateway.close()
    await emulator_clear_faults(stripe_emulator)


async def _customer(gateway: StripeGateway) -> str:
    return await gateway.create_customer(user_id=unique_user(), email=None, name=None)


async def test_retries_a_500_then_succeeds(gateway: StripeGateway, stripe_emulator: str) -> None:
    await emulator_faults(stripe_emulator, method="POST", path=PI_PATH, status=500, times=2)
    before = await emulator_count(stripe_emulator, "POST /v1/customers")
    assert (await _customer(gateway)).startswith("cus_")
    assert await emulator_count(stripe_emulator, "POST /v1/customers") == before + 3


@pytest.mark.parametrize("status", [500, 502, 503, 429, 0])
async def test_unavailable_after_retries_is_503(
    gateway: StripeGateway, stripe_emulator: str, status: int
) -> None:
    await emulator_faults(stripe_emulator, method="POST", path=PI_PATH, status=status, times=3)
    with pytest.raises(StripeUnavailable) as caught:
        await _customer(gateway)
    assert caught.value.status == 503
    assert caught.value.extra["retryable"] is True
    assert caught.value.headers["Retry-After"]


async def test_timeout_is_503(gateway: StripeGateway, stripe_emulator: str) -> None:
    await emulator_faults(
        stripe_emulator, method="POST", path=PI_PATH, status=200, delay=2.0, times=3
    )
    with pytest.raises(StripeUnavailable):
        await _customer(gateway)


@pytest.mark.parametrize("status", [401, 403])
async def test_our_configuration_errors_are_loud_500s(
    gateway: StripeGateway, stripe_emulator: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    await emulator_faults(stripe_emulator, method="POST", path=PI_PATH, status=status, times=1)
    with caplog.at_level(logging.ERROR), pytest.raises(InternalError) as caught:
        await _customer(gateway)
    assert caught.value.status == 500
    assert any("stripe refused customer.create" in r.getMessage() for r in caplog.records)
    assert "sk_test" not in caplog.text


async def test_idempotency_misuse_is_a_500(gateway: StripeGateway) -> None:
    user = unique_user()
    customer = await gateway.create_customer(user_id=user, email=None, name=None)
    # Same key (derived from the user id), different parameters: our bug, not the customer's.
    with pytest.raises(InternalError):
        await gateway.create_customer(user_id=user, email="changed@shop.example", name=None)
    assert customer.startswith("cus_")


async def test_invalid_request_carries_stripes_code(gateway: StripeGateway) -> None:
    with pytest.raises(StripeRejected) as caught:
        await gateway.retrieve_payment_method("pm_nothing_here")
    assert caught.value.stripe_code == "resource_missing"
    assert caught.value.http_status == 404


async def test_card_error_is_402_with_the_intent(gateway: StripeGateway) -> None:
    customer = await _customer(gateway)
    with pytest.raises(CardDeclined) as caught:
        await gateway.create_payment_intent(
            payment_id="pay_test",
            user_id="u",
            amount=2000,
            currency="usd",
            customer_id=customer,
            payment_method_id="pm_card_visa_chargeDeclinedInsufficientFunds",
            description=None,
            metadata={},
            save_payment_method=False,
            idempotency_key=f"test:{unique_user()}",
        )
    declined = caught.value
    assert declined.status == 402
    assert declined.code == "card_declined"
    assert declined.decline_code == "insufficient_funds"
    assert declined.title == "Your card has insufficient funds."
    assert declined.intent is not None
    assert declined.intent.status == "requires_payment_method"
    assert declined.intent.last_payment_error is not None


def test_friendly_messages_never_name_lost_or_stolen_cards() -> None:
    assert friendly_card_message("card_declined", "stolen_card") == "Your card was declined."
    assert friendly_card_message("card_declined", "lost_card") == "Your card was declined."
    assert friendly_card_message("expired_card", None) == "Your card has expired."
    assert friendly_card_message(None, None) == "Your card was declined."


async def test_deterministic_keys_make_retries_safe(
    gateway: StripeGateway, stripe_emulator: str
) -> None:
    """An answer lost after Stripe acted: the retry under the same key gets the same object."""
    await emulator_faults(
        stripe_emulator, method="POST", path=PI_PATH, status=500, times=1, after=True
    )
    user = unique_user()
    before = await emulator_count(stripe_emulator, "POST /v1/customers")
    first = await gateway.create_customer(user_id=user, email=None, name=None)
    # The fault fired: Stripe made the customer, its answer was lost, and the SDK asked again.
    assert await emulator_count(stripe_emulator, "POST /v1/customers") == before + 2
    again = await gateway.create_customer(user_id=user, email=None, name=None)
    assert await emulator_count(stripe_emulator, "POST /v1/customers") == before + 3
    assert first == again
    # Three requests, one customer: the retries replayed the first answer.
    assert [c["id"] for c in await emulator_customers_for(stripe_emulator, user)] == [first]
