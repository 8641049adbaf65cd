"""The fake Stripe (tests/fake_stripe.py) held to the emulator: each scenario runs against both,
the emulator through the real gateway, and must pass on both."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from azora_payments.config import Settings
from azora_payments.errors import InternalError
from azora_payments.ids import new_id
from azora_payments.stripe_gateway import CardDeclined, StripeGateway, StripeRejected
from tests.conftest import STRIPE_KEY, make_settings, unique_user
from tests.fake_stripe import FakeStripeGateway


class EmulatedStripe(StripeGateway):
    """The real gateway on the emulator, with what the fake does on Stripe's side by hand
    (the buyer's 3-D Secure) done through the emulator's own route."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, initial_retry_delay=0.01)
        self.base_url = settings.stripe_api_base

    def authenticate(self, intent_id: str, client_secret: str, *, success: bool = True) -> None:
        httpx.post(
            f"{self.base_url}/v1/payment_intents/{intent_id}/_authenticate",
            data={"client_secret": client_secret, "success": "true" if success else "false"},
            headers={"Authorization": f"Bearer {STRIPE_KEY}"},
            timeout=30,
        ).raise_for_status()


@pytest.fixture(params=["fake", "emulator"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield FakeStripeGateway()
        return
    emulator: str = request.getfixturevalue("stripe_emulator")
    real = EmulatedStripe(
        make_settings(f"sqlite:///{tmp_path}/unused.db", stripe_api_base=emulator)
    )
    yield real
    await real.close()


async def charge_params(gateway: Any, method: str, **changes: Any) -> dict[str, Any]:
    """`create_payment_intent`'s arguments as the payment flow passes them, for a new user
    (with a Stripe customer) and a new payment."""
    user = unique_user()
    customer = await gateway.create_customer(user_id=user, email=None, name=None)
    return {
        "payment_id": new_id("pay"),
        "user_id": user,
        "amount": 2000,
        "currency": "usd",
        "customer_id": customer,
        "payment_method_id": method,
        "description": "Course: Linear Algebra",
        "metadata": {"order_id": "ord_42"},
        "save_payment_method": False,
        **changes,
    }


async def charge(gateway: Any, method: str, **changes: Any) -> tuple[Any, dict[str, Any]]:
    params = await charge_params(gateway, method, **changes)
    return await gateway.create_payment_intent(**params), params


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


async def test_a_charge_succeeds_once_per_payment(gateway: Any) -> None:
    intent, params = await charge(gateway, "pm_card_visa")
    assert intent.id.startswith("pi_")
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 2000, "usd")
    assert (intent.customer, intent.last_payment_error) == (params["customer_id"], None)
    assert intent.latest_charge is not None
    assert intent.payment_method is not None
    assert intent.metadata == {
        "order_id": "ord_42",
        "azora_payment_id": params["payment_id"],
        "azora_user_id": params["user_id"],
    }
    assert await gateway.retrieve_payment_intent(intent.id) == intent
    # The same payment asked again: the same intent, not a second charge.
    assert (await gateway.create_payment_intent(**params)).id == intent.id
    with pytest.raises(InternalError):
        await gateway.create_payment_intent(**{**params, "amount": 2001})
    found = await gateway.find_payment_intents_for(
        payment_id=params["payment_id"],
        customer_id=params["customer_id"],
        created_after=int(time.time()) - 600,
    )
    assert [i.id for i in found] == [intent.id]
    assert (
        await gateway.find_payment_intents_for(
            payment_id=new_id("pay"), customer_id=params["customer_id"], created_after=0
        )
        == []
    )


@pytest.mark.parametrize(
    ("method", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_a_decline_carries_its_intent_and_is_replayed(
    gateway: Any, method: str, decline_code: str
) -> None:
    with pytest.raises(CardDeclined) as declined:
        await charge(gateway, method)
    exc = declined.value
    assert (exc.code, exc.decline_code) == ("card_declined", decline_code)
    assert exc.charge_id is not None
    assert exc.card_fingerprint is not None
    intent = exc.intent
    assert intent is not None
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert (intent.last_payment_error.code, intent.last_payment_error.decline_code) == (
        "card_declined",
        decline_code,
    )
    assert intent.last_payment_error.charge == exc.charge_id
    # Closed, so no client_secret can try another card on it; closing again is a replay.
    canceled = await gateway.cancel_payment_intent(intent.id, reason="abandoned")
    assert (canceled.id, canceled.status) == (intent.id, "canceled")
    assert (await gateway.cancel_payment_intent(intent.id, reason="abandoned")).status == "canceled"
    assert (await gateway.retrieve_payment_intent(intent.id)).status == "canceled"


async def test_a_decline_is_the_same_answer_when_asked_again(gateway: Any) -> None:
    params = await charge_params(gateway, "pm_card_chargeDeclined")
    with pytest.raises(CardDeclined) as first:
        await gateway.create_payment_intent(**params)
    with pytest.raises(CardDeclined) as again:
        await gateway.create_payment_intent(**params)
    assert first.value.intent is not None
    assert again.value.intent is not None
    assert again.value.intent.id == first.value.intent.id
    assert again.value.decline_code == first.value.decline_code == "generic_decline"


async def test_three_d_secure_waits_for_the_buyer(gateway: Any) -> None:
    intent, _ = await charge(gateway, "pm_card_threeDSecure2Required")
    assert intent.status == "requires_action"
    assert intent.client_secret is not None
    assert intent.client_secret.startswith(f"{intent.id}_secret_")
    gateway.authenticate(intent.id, intent.client_secret)
    done = await gateway.retrieve_payment_intent(intent.id)
    assert (done.status, done.last_payment_error) == ("succeeded", None)
    assert done.latest_charge is not None
    with pytest.raises(StripeRejected) as settled:
        await gateway.cancel_payment_intent(intent.id, reason="abandoned")
    assert settled.value.stripe_code == "payment_intent_unexpected_state"


async def test_refunds_up_to_the_amount_once_per_refund(gateway: Any) -> None:
    intent, _ = await charge(gateway, "pm_card_visa", amount=3000)
    refund_id = new_id("rf")
    part = await gateway.create_refund(
        refund_id=refund_id,
        payment_intent_id=intent.id,
        amount=1200,
        reason="requested_by_customer",
    )
    assert part.id.startswith("re_")
    assert (part.status, part.amount, part.currency) == ("succeeded", 1200, "usd")
    assert (part.payment_intent, part.charge) == (intent.id, intent.latest_charge)
    assert part.reason == "requested_by_customer"
    assert part.metadata == {"azora_refund_id": refund_id}
    again = await gateway.create_refund(
        refund_id=refund_id,
        payment_intent_id=intent.id,
        amount=1200,
        reason="requested_by_customer",
    )
    assert again.id == part.id
    with pytest.raises(InternalError):
        await gateway.create_refund(
            refund_id=refund_id, payment_intent_id=intent.id, amount=1000, reason=None
        )
    with pytest.raises(StripeRejected) as too_much:
        await gateway.create_refund(
            refund_id=new_id("rf"), payment_intent_id=intent.id, amount=1801, reason=None
        )
    assert (too_much.value.stripe_code, too_much.value.param) == ("amount_too_large", "amount")
    rest = await gateway.create_refund(
        refund_id=new_id("rf"), payment_intent_id=intent.id, amount=1800, reason=None
    )
    with pytest.raises(StripeRejected) as spent:
        await gateway.create_refund(
            refund_id=new_id("rf"), payment_intent_id=intent.id, amount=1, reason=None
        )
    assert spent.value.stripe_code == "charge_already_refunded"
    assert [r.id for r in await gateway.list_refunds(intent.id)] == [rest.id, part.id]


async def test_nothing_to_refund_on_an_unpaid_intent(gateway: Any) -> None:
    intent, _ = await charge(gateway, "pm_card_threeDSecure2Required")
    with pytest.raises(StripeRejected) as unpaid:
        await gateway.create_refund(
            refund_id=new_id("rf"), payment_intent_id=intent.id, amount=100, reason=None
        )
    assert (unpaid.value.param, unpaid.value.http_status) == ("payment_intent", 400)
    assert await gateway.list_refunds(intent.id) == []
