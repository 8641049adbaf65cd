"""The gateway's error mapping, retries and timeouts, against the emulator at the HTTP level."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import stripe

from azora_payments.errors import AzoraError, InternalError, StripeUnavailable
from azora_payments.stripe_gateway import (
    CardDeclined,
    StripeGateway,
    StripeIntent,
    StripeKeys,
    StripeRejected,
    _HTTPClient,
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


async def _charge(
    gateway: StripeGateway, payment_id: str, customer: str, method: str
) -> StripeIntent:
    return await gateway.create_payment_intent(
        payment_id=payment_id,
        user_id="u",
        amount=2000,
        currency="usd",
        customer_id=customer,
        payment_method_id=method,
        description=None,
        metadata={},
        save_payment_method=False,
    )


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
        await _charge(
            gateway,
            f"pay_test_{unique_user()}",
            customer,
            "pm_card_visa_chargeDeclinedInsufficientFunds",
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


def test_stripe_keys_keep_their_exact_strings() -> None:
    """A retry after a deploy must send the key its first try sent: these never change."""
    assert StripeKeys.customer("u_1") == "azora:customer:u_1"
    assert StripeKeys.default_payment_method("cus_1", 3, "pm_1") == "azora:default_pm:cus_1:3:pm_1"
    assert StripeKeys.attach("pm_1", "cus_1") == "azora:pm_attach:pm_1:cus_1"
    assert StripeKeys.detach("pm_1", "cus_1") == "azora:pm_detach:pm_1:cus_1"
    assert StripeKeys.detach("pm_1", None) == "azora:pm_detach:pm_1:None"
    assert StripeKeys.payment_intent("pay_1") == "azora:pi:pay_1"
    assert StripeKeys.cancel("pi_1") == "azora:pi_cancel:pi_1"
    assert StripeKeys.refund("rf_1") == "azora:refund:rf_1"


async def test_one_payment_one_intent_whoever_asks_again(gateway: StripeGateway) -> None:
    """The key is the gateway's, from the payment id: asking again is the same PaymentIntent."""
    customer = await _customer(gateway)
    payment_id = f"pay_{unique_user()}"
    intents = [await _charge(gateway, payment_id, customer, "pm_card_visa") for _ in range(2)]
    assert intents[0].id == intents[1].id
    assert intents[0].metadata["azora_payment_id"] == payment_id


def test_stripe_rejected_is_never_a_clients_error() -> None:
    assert not issubclass(StripeRejected, AzoraError)
    assert issubclass(CardDeclined, AzoraError)


# The SDK's private methods `_HTTPClient` overrides or calls, with the parameters it relies on.
# An SDK upgrade that renames, moves or reshapes one fails here, not silently in production
# (the override would simply never be called: no backoff of ours, httpx warnings again).
SDK_PRIVATE_METHODS = {
    "_get_request_args_kwargs": (
        stripe.HTTPXClient,
        ["self", "method", "url", "headers", "post_data"],
    ),
    "_sleep_time_seconds": (stripe.HTTPClient, ["self", "num_retries"]),
    "_add_jitter_time": (stripe.HTTPClient, ["self", "sleep_seconds"]),
}
# Where the SDK calls them: an override nobody calls any more is as broken as a missing one.
SDK_CALLERS = {
    "_get_request_args_kwargs": stripe.HTTPXClient.request_async,
    "_sleep_time_seconds": stripe.HTTPClient._request_with_retries_internal_async,
}


@pytest.mark.parametrize("name", sorted(SDK_PRIVATE_METHODS))
def test_the_sdk_still_has_the_private_methods_the_gateway_overrides(name: str) -> None:
    owner, parameters = SDK_PRIVATE_METHODS[name]
    assert name in vars(owner), f"stripe {stripe.VERSION}: {owner.__name__}.{name} is gone"
    assert list(inspect.signature(vars(owner)[name]).parameters) == parameters, (
        f"stripe {stripe.VERSION} changed {owner.__name__}.{name}: check _HTTPClient"
    )
    assert issubclass(_HTTPClient, owner)
    ours = getattr(_HTTPClient, name)
    if name in vars(_HTTPClient):
        assert list(inspect.signature(ours).parameters) == parameters


@pytest.mark.parametrize("name", sorted(SDK_CALLERS))
def test_the_sdk_still_calls_the_methods_the_gateway_overrides(name: str) -> None:
    source = inspect.getsource(SDK_CALLERS[name])
    assert f"self.{name}(" in source, f"stripe {stripe.VERSION} no longer calls {name}"


def test_the_sdk_still_hands_httpx_its_form_as_data() -> None:
    """`_get_request_args_kwargs` moves `data` to `content`: the SDK must still send `data`."""
    base = stripe.HTTPXClient(timeout=1)
    _, kwargs = base._get_request_args_kwargs("post", "https://x.test/v1/a", {}, "a=1")
    assert kwargs["data"] == "a=1"
    ours = _HTTPClient(timeout=1, initial_delay=0.01)
    _, kwargs = ours._get_request_args_kwargs("post", "https://x.test/v1/a", {}, "a=1")
    assert "data" not in kwargs
    assert kwargs["content"] == "a=1"
    assert 0.01 <= ours._sleep_time_seconds(1) <= 0.01 + 1e-9
    assert 0.02 <= ours._sleep_time_seconds(3) <= 0.04
