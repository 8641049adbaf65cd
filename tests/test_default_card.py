"""Issue 9, item 7: the default card in Stripe follows every change, also back to a card that
was the default before (A -> B -> A within Stripe's 24 h idempotency window). On both
databases, read back from the emulator's customer."""

from __future__ import annotations

import httpx

from azora_payments.services import Services
from tests.conftest import STRIPE_KEY
from tests.test_payments import Buyer

SAVE = "/api/payments/methods/save"


async def stripe_default(emulator: str, customer_id: str) -> str | None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        customer = (await http.get(f"{emulator}/v1/customers/{customer_id}")).json()
    default: str | None = (customer.get("invoice_settings") or {}).get("default_payment_method")
    return default


async def test_switching_back_to_an_earlier_default_reaches_stripe(
    api: httpx.AsyncClient, stripe_services: Services, stripe_emulator: str
) -> None:
    from azora_payments.db.repositories import customers as customers_repo

    buyer = Buyer()
    saved = [
        await api.post(SAVE, json={"payment_method_id": pm}, headers=buyer.headers)
        for pm in ("pm_card_visa", "pm_card_mastercard")
    ]
    card_a, card_b = (s.json()["id"] for s in saved)
    async with stripe_services.db.read() as session:
        customer_id = await customers_repo.get_stripe_id(session, buyer.id)
    assert customer_id is not None

    for card in (card_a, card_b, card_a, card_b, card_a):
        again = await api.post(
            SAVE, json={"payment_method_id": card, "set_default": True}, headers=buyer.headers
        )
        assert again.status_code == 200, again.text
        assert again.json()["is_default"] is True
        assert await stripe_default(stripe_emulator, customer_id) == card
        listed = (await api.get("/api/payments/methods/list", headers=buyer.headers)).json()
        assert [m["id"] for m in listed["data"] if m["is_default"]] == [card]
