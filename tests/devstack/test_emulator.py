"""The Stripe emulator (azora_payments.devstack): each localstripe gap it fills, through the SDK."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import stripe

from azora_payments.devstack.emulator import EmulatorProcess, configure_webhook

# stripe's HTTPXClient posts bytes with httpx's deprecated `data=`: not ours to fix here.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

API_KEY = "sk_test_emulator_" + "a" * 16
OTHER_KEY = "sk_test_emulator_" + "b" * 16
WEBHOOK_SECRET = "whsec_emulator_test_secret"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records deliveries and can fail some on purpose."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[float, dict[str, str], bytes]] = []
        self.failures: dict[str, int] = {}  # event type -> how many attempts to answer 500
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_type = json.loads(body)["type"]
                with receiver.lock:
                    receiver.deliveries.append((time.time(), dict(self.headers), body))
                    failing = receiver.failures.get(event_type, 0)
                    if failing:
                        receiver.failures[event_type] = failing - 1
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events_for(self, object_id: str) -> list[tuple[float, dict[str, str], dict[str, Any]]]:
        return [(t, h, json.loads(b)) for t, h, b in self.raw_for(object_id)]

    def raw_for(self, object_id: str) -> list[tuple[float, dict[str, str], bytes]]:
        with self.lock:
            found = list(self.deliveries)
        return [d for d in found if json.loads(d[2])["data"]["object"]["id"] == object_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="module")
def emulator(receiver: Receiver) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(
        webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET, webhook_delay=0
    ) as emu:
        yield emu


@pytest.fixture
async def base_url(emulator: EmulatorProcess) -> str:
    async with httpx.AsyncClient() as http:
        (await http.delete(f"{emulator.base_url}/_config/data")).raise_for_status()
    return emulator.base_url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as client:
        yield client


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[stripe.StripeClient]:
    http_client = stripe.HTTPXClient()
    yield stripe.StripeClient(API_KEY, base_addresses={"api": base_url}, http_client=http_client)
    await http_client.close_async()


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def events(http: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await http.get("/v1/events", params={"limit": 100, **params})
    response.raise_for_status()
    return list(response.json()["data"])


async def event_types_for(http: httpx.AsyncClient, object_id: str) -> list[str]:
    """Types of the events about one object, oldest first."""
    found = await events(http)
    return [e["type"] for e in reversed(found) if e["data"]["object"]["id"] == object_id]


async def paid_intent(
    client: stripe.StripeClient, payment_method: str = "pm_card_visa", amount: int = 1000
) -> stripe.PaymentIntent:
    customer = await client.v1.customers.create_async(params={"email": "payer@example.com"})
    return await client.v1.payment_intents.create_async(
        params={
            "amount": amount,
            "currency": "eur",
            "customer": customer.id,
            "payment_method": payment_method,
            "confirm": True,
        }
    )


# --------------------------------------------------------------------------- a


async def test_a_store_is_never_pickled_to_tmp(client: stripe.StripeClient) -> None:
    path = "/tmp/localstripe.pickle"
    before = os.stat(path).st_mtime_ns if os.path.exists(path) else None
    for i in range(3):
        await client.v1.customers.create_async(params={"email": f"c{i}@example.com"})
    after = os.stat(path).st_mtime_ns if os.path.exists(path) else None
    assert after == before


# --------------------------------------------------------------------------- b


async def test_b_same_idempotency_key_replays_the_first_answer(
    http: httpx.AsyncClient,
) -> None:
    params = {"amount": "500", "currency": "eur"}
    headers = {"Idempotency-Key": "key-1"}
    first = await http.post("/v1/payment_intents", data=params, headers=headers)
    again = await http.post("/v1/payment_intents", data=params, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    other = await http.post(
        "/v1/payment_intents", data={**params, "amount": "600"}, headers=headers
    )
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"

    other_account = await http.post(
        "/v1/payment_intents",
        data=params,
        headers={**headers, "Authorization": f"Bearer {OTHER_KEY}"},
    )
    assert other_account.status_code == 200
    assert other_account.json()["id"] != first.json()["id"]


async def test_b_sdk_idempotency_error(client: stripe.StripeClient) -> None:
    options: Any = {"idempotency_key": "key-2"}
    params: Any = {"amount": 700, "currency": "eur"}
    await client.v1.payment_intents.create_async(params=params, options=options)
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.payment_intents.create_async(
            params={**params, "amount": 701}, options=options
        )


# --------------------------------------------------------------------------- c


async def test_c_payment_intent_takes_real_stripe_params(client: stripe.StripeClient) -> None:
    customer = await client.v1.customers.create_async(
        params={"email": "c@example.com", "metadata": {"user_id": "u1"}}
    )
    assert customer.email == "c@example.com"
    assert customer.metadata.to_dict() == {"user_id": "u1"}
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 2500,
            "currency": "eur",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "description": "Order 42",
            "receipt_email": "receipt@example.com",
            "setup_future_usage": "off_session",
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "return_url": "https://shop.example/return",
            "metadata": {"order_id": "42"},
        }
    )
    assert pi.status == "succeeded"
    assert pi.description == "Order 42"
    assert pi.receipt_email == "receipt@example.com"
    assert pi.setup_future_usage == "off_session"
    assert pi.automatic_payment_methods.enabled is True
    assert pi.metadata.to_dict() == {"order_id": "42"}
    assert pi.payment_method is not None
    assert pi.payment_method.startswith("pm_")
    assert pi.payment_method != "pm_card_visa"
    # setup_future_usage saves the card on the customer, as Stripe does
    saved = await client.v1.customers.payment_methods.list_async(customer.id)
    assert [pm.id for pm in saved.data] == [pi.payment_method]


async def test_c_refund_reason_and_metadata(client: stripe.StripeClient) -> None:
    pi = await paid_intent(client)
    refund = await client.v1.refunds.create_async(
        params={
            "payment_intent": pi.id,
            "reason": "requested_by_customer",
            "metadata": {"ticket": "T-1"},
        }
    )
    assert refund.reason == "requested_by_customer"
    assert refund.metadata.to_dict() == {"ticket": "T-1"}
    assert refund.amount == 1000
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.refunds.create_async(
            params={"payment_intent": pi.id, "reason": "because"}  # type: ignore[typeddict-item]
        )


# --------------------------------------------------------------------------- d


async def test_d_confirm_with_payment_method(client: stripe.StripeClient) -> None:
    pi = await client.v1.payment_intents.create_async(params={"amount": 900, "currency": "eur"})
    assert pi.status == "requires_payment_method"
    pi = await client.v1.payment_intents.confirm_async(
        pi.id, params={"payment_method": "pm_card_visa"}
    )
    assert pi.status == "succeeded"
    assert isinstance(pi.latest_charge, str)
    assert pi.latest_charge.startswith("ch_")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.confirm_async(pi.id)
    assert raised.value.code == "payment_intent_unexpected_state"


# --------------------------------------------------------------------------- e

DECLINES = [
    ("pm_card_chargeCustomerFail", "card_declined", "generic_decline"),
    ("4000000000000002", "card_declined", "generic_decline"),
    ("4000000000009995", "card_declined", "insufficient_funds"),
    ("4000000000009987", "card_declined", "lost_card"),
    ("4000000000009979", "card_declined", "stolen_card"),
    ("4000000000000069", "expired_card", "expired_card"),
    ("4000000000000127", "incorrect_cvc", "incorrect_cvc"),
    ("4000000000000119", "processing_error", "processing_error"),
    ("pm_card_radarBlock", "card_declined", "fraudulent"),
    ("4000000000006975", "card_declined", "card_velocity_exceeded"),
]


@pytest.mark.parametrize(("card", "code", "decline_code"), DECLINES)
async def test_e_decline_at_charge_time_looks_like_stripe(
    client: stripe.StripeClient, http: httpx.AsyncClient, card: str, code: str, decline_code: str
) -> None:
    customer = await client.v1.customers.create_async(params={"email": "d@example.com"})
    if card.startswith("pm_"):
        pm_id = card
    else:
        created = await client.v1.payment_methods.create_async(
            params={
                "type": "card",
                "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        # attaching works: the decline comes when the card is charged
        attached = await client.v1.payment_methods.attach_async(
            created.id, params={"customer": customer.id}
        )
        pm_id = attached.id
    with pytest.raises(stripe.CardError) as raised:
        await client.v1.payment_intents.create_async(
            params={
                "amount": 1000,
                "currency": "eur",
                "customer": customer.id,
                "payment_method": pm_id,
                "confirm": True,
            }
        )
    error = raised.value.error
    assert raised.value.http_status == 402
    assert error is not None
    assert error.type == "card_error"
    assert error.code == code
    assert error.decline_code == decline_code
    assert error.charge is not None
    assert error.charge.startswith("ch_")
    assert error.message
    assert error.payment_intent is not None
    assert error.payment_intent.status == "requires_payment_method"
    assert error.payment_intent.last_payment_error.decline_code == decline_code
    pi = await client.v1.payment_intents.retrieve_async(error.payment_intent.id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error is not None
    assert pi.last_payment_error.code == code
    assert await event_types_for(http, pi.id) == [
        "payment_intent.created",
        "payment_intent.payment_failed",
    ]
    assert await event_types_for(http, error.charge) == ["charge.failed"]


async def test_e_any_decline_reason_on_demand(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    bad = await http.post("/_azora/declines", json={"code": "card_declined"})
    assert bad.status_code == 400
    rule = {"decline_code": "pickup_card", "card": "4242424242424242", "times": 2}
    assert (await http.post("/_azora/declines", json=rule)).status_code == 201
    # Another card is not concerned; this one is declined twice with that reason, then not.
    assert (await paid_intent(client, "pm_card_mastercard")).status == "succeeded"
    for _ in range(2):
        with pytest.raises(stripe.CardError) as raised:
            await paid_intent(client)
        assert raised.value.error is not None
        assert raised.value.error.decline_code == "pickup_card"
        assert raised.value.error.code == "card_declined"
        intent = raised.value.error.payment_intent
        assert intent is not None
        assert intent.last_payment_error.decline_code == "pickup_card"
    assert (await paid_intent(client)).status == "succeeded"
    # Any card, until cleared.
    await http.post("/_azora/declines", json={"decline_code": "security_violation", "times": 9})
    with pytest.raises(stripe.CardError):
        await paid_intent(client, "pm_card_amex")
    assert (await http.delete("/_azora/declines")).status_code == 200
    assert (await paid_intent(client, "pm_card_amex")).status == "succeeded"


async def test_c_metadata_keys_are_limited_as_stripe_limits_them(
    client: stripe.StripeClient,
) -> None:
    params: Any = {"amount": 100, "currency": "eur"}
    fits = await client.v1.payment_intents.create_async(
        params={**params, "metadata": {f"k{i}": "v" for i in range(50)}}
    )
    assert len(fits.metadata.to_dict()) == 50
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.create_async(
            params={**params, "metadata": {f"k{i}": "v" for i in range(51)}}
        )
    assert raised.value.param == "metadata"


async def test_e_retry_after_decline_with_another_card(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as raised:
        await paid_intent(client, "pm_card_visa_chargeDeclinedInsufficientFunds")
    assert raised.value.error is not None
    assert raised.value.error.payment_intent is not None
    pi_id = raised.value.error.payment_intent.id
    pi = await client.v1.payment_intents.confirm_async(
        pi_id, params={"payment_method": "pm_card_mastercard"}
    )
    assert pi.status == "succeeded"
    assert pi.last_payment_error is None


# --------------------------------------------------------------------------- f


@pytest.mark.parametrize("card", ["pm_card_authenticationRequired", "4000002760003184"])
async def test_f_three_d_secure(
    client: stripe.StripeClient, http: httpx.AsyncClient, card: str
) -> None:
    if not card.startswith("pm_"):
        pm = await client.v1.payment_methods.create_async(
            params={
                "type": "card",
                "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        card = pm.id
    pi = await paid_intent(client, card)
    assert pi.status == "requires_action"
    assert pi.next_action is not None
    response = await http.post(
        f"/v1/payment_intents/{pi.id}/_authenticate",
        data={"client_secret": pi.client_secret, "success": "true"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    charge_id = response.json()["latest_charge"]
    assert await event_types_for(http, pi.id) == [
        "payment_intent.created",
        "payment_intent.requires_action",
        "payment_intent.succeeded",
    ]
    assert await event_types_for(http, charge_id) == ["charge.succeeded"]


async def test_f_cancel(client: stripe.StripeClient, http: httpx.AsyncClient) -> None:
    pi = await client.v1.payment_intents.create_async(params={"amount": 300, "currency": "eur"})
    pi = await client.v1.payment_intents.cancel_async(
        pi.id, params={"cancellation_reason": "abandoned"}
    )
    assert pi.status == "canceled"
    assert pi.cancellation_reason == "abandoned"
    assert "payment_intent.canceled" in await event_types_for(http, pi.id)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.cancel_async(pi.id)
    assert raised.value.code == "payment_intent_unexpected_state"


# --------------------------------------------------------------------------- g


async def test_g_refund_rules(client: stripe.StripeClient, http: httpx.AsyncClient) -> None:
    pi = await paid_intent(client, amount=1000)
    charge_id = pi.latest_charge
    assert isinstance(charge_id, str)
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        await client.v1.refunds.create_async(params={"charge": charge_id, "amount": 1001})
    assert too_much.value.code == "amount_too_large"
    first = await client.v1.refunds.create_async(params={"charge": charge_id, "amount": 400})
    assert first.status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 601})
    assert too_much.value.code == "amount_too_large"
    rest = await client.v1.refunds.create_async(params={"payment_intent": pi.id})
    assert rest.amount == 600
    charge = await client.v1.charges.retrieve_async(charge_id)
    assert charge.amount_refunded == 1000
    assert charge.refunded is True
    with pytest.raises(stripe.InvalidRequestError) as done:
        await client.v1.refunds.create_async(params={"charge": charge_id})
    assert done.value.code == "charge_already_refunded"

    listed = await client.v1.refunds.list_async(params={"payment_intent": pi.id})
    assert [r.id for r in listed.data] == [rest.id, first.id]
    assert (await client.v1.refunds.retrieve_async(first.id)).amount == 400

    charge_events = list(await events(http, type="charge.refunded"))
    assert [e["data"]["object"]["amount_refunded"] for e in charge_events] == [1000, 400]
    settled = ["refund.created", "charge.refund.updated", "refund.updated"]

    async def refund_settled() -> bool:
        return await event_types_for(http, first.id) == settled

    await eventually(refund_settled)


async def test_g_refund_that_fails_later(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    pi = await paid_intent(client, "pm_card_refundFail")
    refund = await client.v1.refunds.create_async(params={"payment_intent": pi.id})
    assert refund.status in ("pending", "succeeded")

    async def failed() -> bool:
        return (await client.v1.refunds.retrieve_async(refund.id)).status == "failed"

    await eventually(failed)
    again = await client.v1.refunds.retrieve_async(refund.id)
    assert again.failure_reason
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert charge.amount_refunded == 0
    assert charge.refunded is False
    types = await eventually(lambda: _has_refund_failed(http, refund.id))
    assert types[0] == "refund.created"
    assert {"refund.failed", "refund.updated", "charge.refund.updated"} <= set(types)


async def _has_refund_failed(http: httpx.AsyncClient, refund_id: str) -> list[str] | None:
    types = await event_types_for(http, refund_id)
    return types if "refund.failed" in types else None


# --------------------------------------------------------------------------- h


async def _dispute_for(client: stripe.StripeClient, pi_id: str) -> stripe.Dispute:
    async def find() -> stripe.Dispute | None:
        found = await client.v1.disputes.list_async(params={"payment_intent": pi_id})
        return found.data[0] if found.data else None

    dispute: stripe.Dispute = await eventually(find)
    return dispute


async def test_h_dispute_won_with_evidence(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    pi = await paid_intent(client, "pm_card_createDispute", amount=1500)
    assert pi.status == "succeeded"
    dispute = await _dispute_for(client, pi.id)
    assert dispute.id.startswith("dp_")
    assert dispute.status == "needs_response"
    assert dispute.reason == "fraudulent"
    assert dispute.amount == 1500
    assert dispute.charge == pi.latest_charge
    assert (await client.v1.disputes.retrieve_async(dispute.id)).id == dispute.id
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert charge.disputed is True
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id})
    assert raised.value.code == "charge_disputed"

    won = await client.v1.disputes.update_async(
        dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    assert won.status == "won"
    types = await event_types_for(http, dispute.id)
    assert types[0] == "charge.dispute.created"
    assert types.index("charge.dispute.updated") < types.index("charge.dispute.closed")


@pytest.mark.parametrize("how", ["losing_evidence", "close"])
async def test_h_dispute_lost(
    client: stripe.StripeClient, http: httpx.AsyncClient, how: str
) -> None:
    pi = await paid_intent(client, "pm_card_createDispute")
    dispute = await _dispute_for(client, pi.id)
    if how == "close":
        lost = await client.v1.disputes.close_async(dispute.id)
    else:
        lost = await client.v1.disputes.update_async(
            dispute.id, params={"evidence": {"uncategorized_text": how}}
        )
    assert lost.status == "lost"
    assert "charge.dispute.closed" in await event_types_for(http, dispute.id)
    assert len((await client.v1.disputes.list_async()).data) == 1


# --------------------------------------------------------------------------- i


async def test_i_events_api_version_and_latest_charge(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    pi = await paid_intent(client)
    assert isinstance(pi.latest_charge, str)
    expanded = await client.v1.payment_intents.retrieve_async(
        pi.id, params={"expand": ["latest_charge"]}
    )
    assert isinstance(expanded.latest_charge, stripe.Charge)
    assert expanded.latest_charge.id == pi.latest_charge
    found = await events(http)
    assert found
    assert {e["api_version"] for e in found} == {stripe.api_version}
    succeeded = [e for e in found if e["type"] == "payment_intent.succeeded"]
    assert succeeded[0]["data"]["object"]["latest_charge"] == pi.latest_charge
    assert await event_types_for(http, pi.latest_charge) == ["charge.succeeded"]


async def test_i_event_listing_for_reconciliation(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    since = int(time.time()) - 1
    created = [
        await client.v1.customers.create_async(params={"email": f"e{i}@example.com"})
        for i in range(5)
    ]
    page = await events(http, **{"created[gt]": since, "type": "customer.created", "limit": 2})
    assert [e["data"]["object"]["id"] for e in page] == [created[4].id, created[3].id]
    rest = await events(http, type="customer.created", starting_after=page[-1]["id"])
    assert [e["data"]["object"]["id"] for e in rest] == [c.id for c in reversed(created[:3])]
    assert await events(http, **{"created[gt]": int(time.time()) + 5}) == []
    sdk_page = await client.v1.events.list_async(params={"type": "customer.*", "limit": 3})
    assert len(sdk_page.data) == 3
    assert sdk_page.has_more


async def test_i_payment_method_events(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    customer = await client.v1.customers.create_async(params={"email": "pm@example.com"})
    pm = await client.v1.payment_methods.attach_async(
        "pm_card_visa", params={"customer": customer.id}
    )
    await client.v1.payment_methods.update_async(pm.id, params={"billing_details": {"name": "Ada"}})
    await client.v1.payment_methods.detach_async(pm.id)
    assert await event_types_for(http, pm.id) == [
        "payment_method.attached",
        "payment_method.updated",
        "payment_method.detached",
    ]


# --------------------------------------------------------------------------- j


async def test_j_webhooks_signed_ordered_and_retried(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    receiver.failures["charge.succeeded"] = 2
    pi = await paid_intent(client)
    charge_id = str(pi.latest_charge)

    delivered = await eventually(lambda: len(receiver.events_for(charge_id)) >= 3)
    assert delivered
    attempts = receiver.events_for(charge_id)
    assert [a[2]["type"] for a in attempts] == ["charge.succeeded"] * 3
    assert attempts[2][0] - attempts[0][0] >= 1.3  # backoff 0.5 s then 1 s
    for _, headers, raw in receiver.raw_for(charge_id):
        event = stripe.Webhook.construct_event(raw, headers["Stripe-Signature"], WEBHOOK_SECRET)
        assert event.id == attempts[0][2]["id"]
    # signed when sent, not when the event was created
    stamp = int(attempts[2][1]["Stripe-Signature"].split(",")[0].removeprefix("t="))
    assert stamp >= attempts[2][2]["created"] + 1

    pi_events = await eventually(lambda: len(receiver.events_for(pi.id)) >= 2)
    assert pi_events
    assert [e[2]["type"] for e in receiver.events_for(pi.id)] == [
        "payment_intent.created",
        "payment_intent.succeeded",
    ]


async def test_j_signature_verifies_with_the_sdk(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    customer = await client.v1.customers.create_async(params={"email": "sig@example.com"})
    deliveries = await eventually(lambda: receiver.raw_for(customer.id))
    _, headers, raw = deliveries[0]
    assert stripe.WebhookSignature.verify_header(
        raw.decode(), headers["Stripe-Signature"], WEBHOOK_SECRET, tolerance=300
    )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            raw.decode(), headers["Stripe-Signature"], "whsec_wrong", tolerance=300
        )


async def test_j_configure_webhook_repoints(base_url: str, receiver: Receiver) -> None:
    other = Receiver()
    other.thread.start()
    try:
        await asyncio.to_thread(
            configure_webhook, base_url, url=other.url, secret=WEBHOOK_SECRET, name="other"
        )
        async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as http:
            created = (await http.post("/v1/customers", data={"email": "o@example.com"})).json()
        assert await eventually(lambda: other.events_for(created["id"]))
    finally:
        await asyncio.to_thread(
            configure_webhook, base_url, url=receiver.url, secret=WEBHOOK_SECRET, name="other"
        )
        other.server.shutdown()
        other.server.server_close()


# --------------------------------------------------------------------------- k


async def fault(http: httpx.AsyncClient, **spec: Any) -> None:
    response = await http.post("/_azora/faults", json=spec)
    assert response.status_code == 201, response.text


async def test_k_injected_error_then_recovery(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    await fault(http, method="POST", path="^/v1/payment_intents$", status=500, times=1)
    params: Any = {"amount": 100, "currency": "eur"}
    with pytest.raises(stripe.APIError) as raised:
        await client.v1.payment_intents.create_async(
            params=params, options={"max_network_retries": 0}
        )
    assert raised.value.http_status == 500
    assert raised.value.error is not None
    assert raised.value.error.type == "api_error"
    await client.v1.payment_intents.create_async(params=params, options={"max_network_retries": 0})
    counts = (await http.get("/_azora/requests")).json()
    assert counts["POST /v1/payment_intents"] == 2


async def test_k_response_lost_after_the_work_is_done(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    customer = await client.v1.customers.create_async(params={"email": "k@example.com"})
    await fault(http, method="POST", path="^/v1/payment_intents$", status=500, after=True)
    pi = await client.v1.payment_intents.create_async(
        params={"amount": 100, "currency": "eur", "customer": customer.id},
        options={"max_network_retries": 2},
    )
    # the SDK retried with the same Idempotency-Key and got the first, lost, answer
    listed = await client.v1.payment_intents.list_async(params={"customer": customer.id})
    assert [p.id for p in listed.data] == [pi.id]
    counts = (await http.get("/_azora/requests")).json()
    assert counts["POST /v1/payment_intents"] == 2


async def test_k_dropped_connection_and_delay(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    await fault(http, method="GET", path="^/v1/customers/", status=0, times=1)
    customer = await client.v1.customers.create_async(params={"email": "drop@example.com"})
    with pytest.raises(stripe.APIConnectionError):
        await client.v1.customers.retrieve_async(customer.id, options={"max_network_retries": 0})
    await fault(http, method="GET", path="^/v1/customers/", status=503, delay=0.3)
    started = time.monotonic()
    with pytest.raises(stripe.APIError):
        await client.v1.customers.retrieve_async(customer.id, options={"max_network_retries": 0})
    assert time.monotonic() - started >= 0.3
    await fault(http, path="^/v1/customers/", status=500, times=5)
    assert len((await http.get("/_azora/faults")).json()) == 1
    assert (await http.delete("/_azora/faults")).status_code == 200
    assert (await client.v1.customers.retrieve_async(customer.id)).id == customer.id


async def test_k_a_slow_stripe_answers_for_real_after_the_delay(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    await fault(http, method="POST", path="^/v1/customers$", status=200, delay=0.3)
    started = time.monotonic()
    customer = await client.v1.customers.create_async(params={"email": "slow@example.com"})
    assert time.monotonic() - started >= 0.3
    assert (await client.v1.customers.retrieve_async(customer.id)).email == "slow@example.com"


async def test_k_a_fault_may_answer_a_body_of_its_own(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    error = {"type": "card_error", "code": "card_declined", "decline_code": "do_not_honor"}
    await fault(http, path="^/v1/payment_intents$", status=402, body={"error": error})
    with pytest.raises(stripe.CardError) as raised:
        await client.v1.payment_intents.create_async(params={"amount": 100, "currency": "eur"})
    assert raised.value.error is not None
    assert raised.value.error.decline_code == "do_not_honor"


async def test_k_a_fault_may_match_one_clients_body(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    """Among many alike calls (a load running beside a fault), only the matching one fails."""
    await fault(http, method="POST", path="^/v1/customers$", status=500, match="k-one@")
    other = await client.v1.customers.create_async(
        params={"email": "k-other@example.com"}, options={"max_network_retries": 0}
    )
    assert other.email == "k-other@example.com"
    with pytest.raises(stripe.APIError):
        await client.v1.customers.create_async(
            params={"email": "k-one@example.com"}, options={"max_network_retries": 0}
        )
    assert (await http.get("/_azora/faults")).json() == []
    bad = await http.post("/_azora/faults", json={"path": "x", "match": "("})
    assert bad.status_code == 400


async def test_k_data_reset_clears_idempotency_and_faults(http: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "reset-key"}
    first = await http.post("/v1/customers", data={"email": "r@example.com"}, headers=headers)
    await fault(http, path="^/v1/charges$", status=500, times=3)
    assert (await http.delete("/_config/data")).status_code == 200
    assert (await http.get("/_azora/faults")).json() == []
    again = await http.post("/v1/customers", data={"email": "r@example.com"}, headers=headers)
    assert again.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in again.headers


async def test_k_refusals_on_demand_carry_stripes_code(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    pi = await paid_intent(client)
    await fault(http, method="POST", path="^/v1/refunds$", status=400, code="balance_insufficient")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 10})
    assert (raised.value.http_status, raised.value.code) == (400, "balance_insufficient")
    await fault(
        http,
        method="POST",
        path="^/v1/payment_intents/[^/]+/cancel$",
        status=400,
        code="payment_intent_unexpected_state",
    )
    waiting = await client.v1.payment_intents.create_async(
        params={"amount": 300, "currency": "eur"}
    )
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await client.v1.payment_intents.cancel_async(waiting.id)
    assert refused.value.code == "payment_intent_unexpected_state"
    # Refused before any work: the intent is as it was, and a later cancel goes through.
    assert (await client.v1.payment_intents.retrieve_async(waiting.id)).status != "canceled"
    assert (await client.v1.payment_intents.cancel_async(waiting.id)).status == "canceled"


# --------------------------------------------------------------------------- m


async def test_m_search_by_metadata_customer_and_status(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    customer = await client.v1.customers.create_async(params={"email": "m@example.com"})
    made = [
        await client.v1.payment_intents.create_async(
            params={
                "amount": 100 + i,
                "currency": "eur",
                "customer": customer.id,
                "metadata": {"order": "o1" if i < 2 else "o2"},
            }
        )
        for i in range(3)
    ]
    found = await client.v1.payment_intents.search_async(params={"query": "metadata['order']:'o1'"})
    assert [p.id for p in found.data] == [made[1].id, made[0].id]  # newest first
    both = await client.v1.payment_intents.search_async(
        params={
            "query": f"customer:'{customer.id}' AND status:'requires_payment_method'",
            "limit": 2,
        }
    )
    assert [p.id for p in both.data] == [made[2].id, made[1].id]
    assert both.has_more is False
    none = await client.v1.payment_intents.search_async(params={"query": "metadata['order']:'x'"})
    assert none.data == []
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payment_intents.search_async(params={"query": "amount>10"})
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payment_intents.search_async(
            params={"query": "metadata['order']:'o1'", "limit": 500}
        )


async def test_m_search_lags_like_stripes_index(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={"amount": 100, "currency": "eur", "metadata": {"order": "lag"}}
    )
    query: Any = {"query": "metadata['order']:'lag'"}
    assert (await http.post("/_azora/search", json={"lag": 60})).json() == {"lag": 60.0}
    assert (await client.v1.payment_intents.search_async(params=query)).data == []
    # The list has no lag.
    assert pi.id in [p.id for p in (await client.v1.payment_intents.list_async()).data]
    assert (await http.post("/_azora/search", json={})).status_code == 400
    await http.post("/_azora/search", json={"lag": 0})
    assert [p.id for p in (await client.v1.payment_intents.search_async(params=query)).data] == [
        pi.id
    ]


# --------------------------------------------------------------------------- l


async def test_l_customer_payment_methods(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    customer = await client.v1.customers.create_async(params={"email": "l@example.com"})
    brands = {}
    for test_pm in ("pm_card_visa", "pm_card_mastercard", "pm_card_amex"):
        pm = await client.v1.payment_methods.attach_async(test_pm, params={"customer": customer.id})
        assert pm.customer == customer.id
        assert pm.card is not None
        brands[pm.id] = (pm.card.brand, pm.card.last4)
    assert sorted(brands.values()) == [("amex", "0005"), ("mastercard", "4444"), ("visa", "4242")]

    listed = await client.v1.payment_methods.list_async(
        params={"customer": customer.id, "type": "card"}
    )
    assert [pm.id for pm in listed.data] == list(reversed(brands))
    via_customer = await client.v1.customers.payment_methods.list_async(
        customer.id, params={"type": "card"}
    )
    assert [pm.id for pm in via_customer.data] == [pm.id for pm in listed.data]

    default = listed.data[0].id
    updated = await client.v1.customers.update_async(
        customer.id, params={"invoice_settings": {"default_payment_method": default}}
    )
    assert updated.invoice_settings is not None
    assert updated.invoice_settings.default_payment_method == default
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.customers.update_async(
            customer.id, params={"invoice_settings": {"default_payment_method": "pm_card_visa"}}
        )
    await client.v1.payment_methods.detach_async(default)
    left = await client.v1.customers.payment_methods.list_async(customer.id)
    assert default not in [pm.id for pm in left.data]
    assert (await client.v1.customers.retrieve_async(customer.id)).invoice_settings is not None

    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 4200,
            "currency": "eur",
            "customer": customer.id,
            "payment_method": left.data[0].id,
        }
    )
    assert pi.status == "requires_confirmation"
    pi = await client.v1.payment_intents.confirm_async(pi.id)
    assert pi.status == "succeeded"
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.card is not None
    assert charge.payment_method_details.card.last4 == "4444"

    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.customers.retrieve_async("cus_missing")
    assert missing.value.code == "resource_missing"


def test_l_sync_sdk_calls(emulator: EmulatorProcess) -> None:
    http_client = stripe.HTTPXClient(allow_sync_methods=True)
    client = stripe.StripeClient(
        API_KEY, base_addresses={"api": emulator.base_url}, http_client=http_client
    )
    try:
        pi = client.v1.payment_intents.create(
            params={
                "amount": 100,
                "currency": "eur",
                "payment_method": "pm_card_amex",
                "confirm": True,
            }
        )
        assert pi.status == "succeeded"
        refund = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 40})
        assert client.v1.refunds.retrieve(refund.id).amount == 40
    finally:
        http_client.close()


def test_emulator_process_stops_cleanly() -> None:
    emu = EmulatorProcess(webhook_delay=0)
    base_url = emu.start()
    assert base_url.startswith("http://127.0.0.1:")
    process = emu._process
    emu.stop()
    assert process is not None
    assert process.returncode == 0
    with pytest.raises(RuntimeError):
        _ = emu.base_url
