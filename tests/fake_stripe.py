"""A fake Stripe for fast tests of customers and saved cards, where the emulator adds nothing.

It answers what `azora_payments.stripe_gateway.StripeGateway` answers for the same calls, and
`tests/test_gateway_contract.py` holds it to that: every scenario there runs against this fake
and against the emulator through the real gateway. Only the customer and payment-method calls
are faked so far; everything that charges, refunds or emits events stays on the emulator.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace

from azora_payments.errors import InternalError
from azora_payments.stripe_gateway import Card, StripePaymentMethod, StripeRejected

# The test ids the fake knows, as the emulator resolves them: brand and number.
TEST_CARDS = {
    "pm_card_visa": ("visa", "4242424242424242"),
    "pm_card_mastercard": ("mastercard", "5555555555554444"),
    "pm_card_amex": ("amex", "378282246310005"),
}


class FakeStripeGateway:
    """Customers and payment methods in memory, with Stripe's refusals."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._customers_by_user: dict[str, str] = {}
        self._defaults: dict[str, str | None] = {}
        self._customer_params: dict[str, tuple[str | None, str | None]] = {}
        self._methods: dict[str, StripePaymentMethod] = {}
        self.now = 1_764_000_000

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):010d}"

    async def close(self) -> None:
        return None

    async def create_customer(self, *, user_id: str, email: str | None, name: str | None) -> str:
        # The real gateway's key is built from the user: a second call replays the first, and
        # one with other parameters is Stripe's idempotency error (ours to fix: a 500).
        params = (email, name)
        if user_id not in self._customers_by_user:
            customer = self._id("cus")
            self._customers_by_user[user_id] = customer
            self._customer_params[customer] = params
            self._defaults[customer] = None
        customer = self._customers_by_user[user_id]
        if self._customer_params[customer] != params:
            raise InternalError()
        return customer

    def _customer(self, customer_id: str) -> str:
        if customer_id not in self._defaults:
            raise StripeRejected(stripe_code="resource_missing", param="id", http_status=404)
        return customer_id

    async def default_payment_method(self, customer_id: str) -> str | None:
        return self._defaults[self._customer(customer_id)]

    async def set_default_payment_method(
        self, *, customer_id: str, payment_method_id: str, version: int
    ) -> None:
        self._customer(customer_id)
        if payment_method_id:
            method = self._methods.get(payment_method_id)
            if method is None or method.customer != customer_id:
                raise StripeRejected(
                    stripe_code="resource_missing",
                    param="invoice_settings[default_payment_method]",
                    http_status=400,
                )
        self._defaults[customer_id] = payment_method_id or None

    async def retrieve_payment_method(self, payment_method_id: str) -> StripePaymentMethod:
        if payment_method_id in TEST_CARDS:
            brand, number = TEST_CARDS[payment_method_id]
            fingerprint = hashlib.sha256(number.encode()).hexdigest()[:16]
            card = Card(brand=brand, last4=number[-4:], exp_month=12, exp_year=2034,
                        fingerprint=fingerprint)  # fmt: skip
            made = StripePaymentMethod(
                id=self._id("pm"), type="card", customer=None, card=card, created=self.now
            )
            self._methods[made.id] = made
            return made
        known = self._methods.get(payment_method_id)
        if known is None:
            raise StripeRejected(stripe_code="resource_missing", param="id", http_status=404)
        return known

    async def attach_payment_method(
        self, *, payment_method_id: str, customer_id: str
    ) -> StripePaymentMethod:
        method = await self.retrieve_payment_method(payment_method_id)
        self._customer(customer_id)
        attached = replace(method, customer=customer_id)
        self._methods[attached.id] = attached
        return attached

    async def detach_payment_method(
        self, *, payment_method_id: str, customer_id: str | None
    ) -> None:
        method = await self.retrieve_payment_method(payment_method_id)
        if method.customer is None:
            raise StripeRejected(
                stripe_code="payment_method_unexpected_state", param=None, http_status=400
            )
        if self._defaults.get(method.customer) == method.id:
            self._defaults[method.customer] = None
        self._methods[method.id] = replace(method, customer=None)
