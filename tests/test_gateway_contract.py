"""The fake Stripe (tests/fake_stripe.py) held to the emulator: each scenario runs against both,
the emulator through the real gateway, and must pass on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from azora_payments.errors import InternalError
from azora_payments.stripe_gateway import StripeGateway, StripeRejected
from tests.conftest import make_settings, unique_user
from tests.fake_stripe import FakeStripeGateway


@pytest.fixture(params=["fake", "emulator"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield FakeStripeGateway()
        return
    emulator: str = request.getfixturevalue("stripe_emulator")
    settings = make_settings(f"sqlite:///{tmp_path}/unused.db", stripe_api_base=emulator)
    real = StripeGateway(settings, initial_retry_delay=0.01)
    yield real
    await real.close()


async def test_one_customer_per_user(gateway: Any) -> None:
    user = unique_user()
    first = await gateway.create_customer(user_id=user, email="a@shop.example", name="Ada")
    assert first.startswith("cus_")
    assert await gateway.create_customer(user_id=user, email="a@shop.example", name="Ada") == first
    # The same key with other parameters: Stripe's idempotency error, ours to fix.
    with pytest.raises(InternalError):
        await gateway.create_customer(user_id=user, email=None, name=None)
    assert await gateway.create_customer(user_id=unique_user(), email=None, name=None) != first
    assert await gateway.default_payment_method(first) is None


@pytest.mark.parametrize(
    ("test_id", "brand", "last4"),
    [("pm_card_visa", "visa", "4242"), ("pm_card_amex", "amex", "0005")],
)
async def test_a_test_card_is_a_new_method_each_time(
    gateway: Any, test_id: str, brand: str, last4: str
) -> None:
    one = await gateway.retrieve_payment_method(test_id)
    two = await gateway.retrieve_payment_method(test_id)
    assert one.id.startswith("pm_")
    assert one.id != two.id
    assert (one.type, one.customer) == ("card", None)
    assert one.card is not None
    assert (one.card.brand, one.card.last4) == (brand, last4)
    assert one.card.fingerprint is not None
    assert two.card is not None
    assert one.card.fingerprint == two.card.fingerprint
    assert (await gateway.retrieve_payment_method(one.id)).id == one.id


async def test_attach_default_detach(gateway: Any) -> None:
    customer = await gateway.create_customer(user_id=unique_user(), email=None, name=None)
    method = await gateway.retrieve_payment_method("pm_card_visa")
    attached = await gateway.attach_payment_method(
        payment_method_id=method.id, customer_id=customer
    )
    assert (attached.id, attached.customer) == (method.id, customer)
    assert (await gateway.retrieve_payment_method(method.id)).customer == customer
    await gateway.set_default_payment_method(
        customer_id=customer, payment_method_id=method.id, version=1
    )
    assert await gateway.default_payment_method(customer) == method.id
    await gateway.detach_payment_method(payment_method_id=method.id, customer_id=customer)
    assert (await gateway.retrieve_payment_method(method.id)).customer is None
    # Stripe clears a detached method from the customer's default.
    assert await gateway.default_payment_method(customer) is None


async def test_refusals(gateway: Any) -> None:
    with pytest.raises(StripeRejected) as missing:
        await gateway.retrieve_payment_method("pm_doesnotexist123")
    assert (missing.value.stripe_code, missing.value.http_status) == ("resource_missing", 404)

    customer = await gateway.create_customer(user_id=unique_user(), email=None, name=None)
    loose = await gateway.retrieve_payment_method("pm_card_visa")
    with pytest.raises(StripeRejected) as not_attached:
        await gateway.detach_payment_method(payment_method_id=loose.id, customer_id=None)
    assert not_attached.value.stripe_code == "payment_method_unexpected_state"
    with pytest.raises(StripeRejected) as foreign_default:
        await gateway.set_default_payment_method(
            customer_id=customer, payment_method_id=loose.id, version=1
        )
    assert foreign_default.value.stripe_code == "resource_missing"
