"""A fake Stripe for fast tests of the domain flows, where the emulator adds nothing.

It answers what `azora_payments.stripe_gateway.StripeGateway` answers for the same calls, and
`tests/test_gateway_contract.py` holds it to that: every scenario there runs against this fake
and against the emulator through the real gateway. Faked: customers and payment methods;
PaymentIntents (charge, the test cards' declines, 3-D Secure waiting for the buyer, cancel,
finding them by our payment id); refunds. Not faked: events (it emits none, so `list_events`
is always empty and `verify_event` verifies nothing): webhooks stay on the emulator, as does
everything end to end.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from dataclasses import replace
from typing import Any

from azora_payments.errors import InternalError, InvalidSignature
from azora_payments.stripe_gateway import (
    Card,
    CardDeclined,
    PaymentError,
    StripeIntent,
    StripePaymentMethod,
    StripeRefund,
    StripeRejected,
    friendly_card_message,
)

# The test ids the fake knows, as the emulator resolves them: brand and number.
TEST_CARDS = {
    "pm_card_visa": ("visa", "4242424242424242"),
    "pm_card_mastercard": ("mastercard", "5555555555554444"),
    "pm_card_amex": ("amex", "378282246310005"),
    "pm_card_chargeDeclined": ("visa", "4000000000000002"),
    "pm_card_visa_chargeDeclinedInsufficientFunds": ("visa", "4000000000009995"),
    "pm_card_threeDSecure2Required": ("visa", "4000000000003220"),
}
# Card number -> (code, decline_code) of the decline at charge time.
DECLINES = {
    "4000000000000002": ("card_declined", "generic_decline"),
    "4000000000009995": ("card_declined", "insufficient_funds"),
}
# Card numbers whose charge waits for the buyer's 3-D Secure.
THREE_D_SECURE = {"4000000000003220"}
# Stripe cancels an intent only in these states.
CANCELABLE = {"requires_payment_method", "requires_confirmation", "requires_action", "processing"}


class FakeStripeGateway:
    """Customers and payment methods in memory, with Stripe's refusals."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._customers_by_user: dict[str, str] = {}
        self._defaults: dict[str, str | None] = {}
        self._customer_params: dict[str, tuple[str | None, str | None]] = {}
        self._methods: dict[str, StripePaymentMethod] = {}
        self._numbers: dict[str, str] = {}  # payment method id -> its card number
        # By our payment id: the parameters of the first create, and what it answered.
        self._creates: dict[str, tuple[tuple[Any, ...], StripeIntent | CardDeclined]] = {}
        self._intents: dict[str, StripeIntent] = {}
        self._created: dict[str, int] = {}  # intent id -> its creation time
        self._refund_creates: dict[str, tuple[tuple[Any, ...], StripeRefund]] = {}
        self._refunds: dict[str, list[StripeRefund]] = {}  # by intent id, newest first
        self.livemode = False
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
            self._numbers[made.id] = number
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

    # -------------------------------------------------------------- payment intents

    async def create_payment_intent(
        self,
        *,
        payment_id: str,
        user_id: str,
        amount: int,
        currency: str,
        customer_id: str,
        payment_method_id: str,
        description: str | None,
        metadata: dict[str, str],
        save_payment_method: bool,
    ) -> StripeIntent:
        # One key per payment (as the real gateway's): a repeat replays the first answer, a
        # decline included; other parameters under it are Stripe's idempotency error.
        params = (user_id, amount, currency, customer_id, payment_method_id, description,
                  tuple(sorted(metadata.items())), save_payment_method)  # fmt: skip
        if payment_id in self._creates:
            first, replayed = self._creates[payment_id]
            if first != params:
                raise InternalError()
            if isinstance(replayed, CardDeclined):
                raise replayed
            return replayed
        self._customer(customer_id)
        method = await self.retrieve_payment_method(payment_method_id)
        number = self._numbers[method.id]
        intent_id = self._id("pi")
        charge = self._id("ch")
        intent = StripeIntent(
            id=intent_id,
            status="succeeded",
            amount=amount,
            currency=currency,
            client_secret=f"{intent_id}_secret_{uuid.uuid4().hex[:24]}",
            latest_charge=charge,
            payment_method=method.id,
            customer=customer_id,
            metadata={**metadata, "azora_payment_id": payment_id, "azora_user_id": user_id},
            last_payment_error=None,
        )
        answer: StripeIntent | CardDeclined
        if number in DECLINES:
            code, decline_code = DECLINES[number]
            fingerprint = method.card.fingerprint if method.card else None
            error = PaymentError(code, decline_code, friendly_card_message(code, decline_code),
                                 charge, fingerprint)  # fmt: skip
            intent = replace(intent, status="requires_payment_method", last_payment_error=error)
            answer = CardDeclined(code=code, decline_code=decline_code, intent=intent,
                                  charge_id=charge, card_fingerprint=fingerprint)  # fmt: skip
        elif number in THREE_D_SECURE:
            intent = replace(intent, status="requires_action", latest_charge=None)
            answer = intent
        else:
            answer = intent
        self._intents[intent.id] = intent
        self._created[intent.id] = self.now
        self._creates[payment_id] = (params, answer)
        if isinstance(answer, CardDeclined):
            raise answer
        return answer

    def _intent(self, intent_id: str) -> StripeIntent:
        intent = self._intents.get(intent_id)
        if intent is None:
            raise StripeRejected(stripe_code="resource_missing", param="intent", http_status=404)
        return intent

    async def retrieve_payment_intent(self, intent_id: str) -> StripeIntent:
        return self._intent(intent_id)

    async def cancel_payment_intent(self, intent_id: str, *, reason: str) -> StripeIntent:
        intent = self._intent(intent_id)
        if intent.status == "canceled":
            return intent  # the real gateway's key is per intent: a repeat is a replay
        if intent.status not in CANCELABLE:
            raise StripeRejected(
                stripe_code="payment_intent_unexpected_state", param=None, http_status=400
            )
        canceled = replace(intent, status="canceled")
        self._intents[intent_id] = canceled
        return canceled

    def authenticate(self, intent_id: str, client_secret: str, *, success: bool = True) -> None:
        """The buyer completes (or fails) 3-D Secure, as Stripe.js would: the emulator's
        `POST /v1/payment_intents/<id>/_authenticate`."""
        intent = self._intent(intent_id)
        assert intent.client_secret == client_secret
        assert intent.status == "requires_action"
        if success:
            self._intents[intent_id] = replace(
                intent, status="succeeded", latest_charge=self._id("ch")
            )
        else:
            failure = PaymentError(
                "payment_intent_authentication_failure",
                None,
                friendly_card_message("payment_intent_authentication_failure", None),
            )
            self._intents[intent_id] = replace(
                intent, status="requires_payment_method", last_payment_error=failure
            )

    async def search_payment_intents(self, payment_id: str) -> list[StripeIntent]:
        return [
            i for i in self._intents.values() if i.metadata.get("azora_payment_id") == payment_id
        ]

    async def list_customer_intents_for(
        self, *, payment_id: str, customer_id: str, created_after: int
    ) -> list[StripeIntent]:
        return [
            i
            for i in await self.search_payment_intents(payment_id)
            if i.customer == customer_id and self._created[i.id] >= created_after
        ]

    async def find_payment_intents_for(
        self, *, payment_id: str, customer_id: str | None, created_after: int
    ) -> list[StripeIntent]:
        found = {i.id: i for i in await self.search_payment_intents(payment_id)}
        if customer_id is not None:
            listed = await self.list_customer_intents_for(
                payment_id=payment_id, customer_id=customer_id, created_after=created_after
            )
            found.update({i.id: i for i in listed})
        return list(found.values())

    # -------------------------------------------------------------- refunds

    async def create_refund(
        self, *, refund_id: str, payment_intent_id: str, amount: int, reason: str | None
    ) -> StripeRefund:
        params = (payment_intent_id, amount, reason)
        if refund_id in self._refund_creates:
            first, made = self._refund_creates[refund_id]
            if first != params:
                raise InternalError()
            return made
        intent = self._intent(payment_intent_id)
        if intent.status != "succeeded":
            # No successful charge to refund (Stripe names no code for this one).
            raise StripeRejected(stripe_code=None, param="payment_intent", http_status=400)
        remaining = intent.amount - sum(r.amount for r in self._refunds.get(intent.id, []))
        if remaining <= 0:
            raise StripeRejected(stripe_code="charge_already_refunded", param=None, http_status=400)
        if amount > remaining:
            raise StripeRejected(stripe_code="amount_too_large", param="amount", http_status=400)
        made = StripeRefund(
            id=self._id("re"),
            status="succeeded",
            amount=amount,
            currency=intent.currency,
            charge=intent.latest_charge,
            payment_intent=intent.id,
            reason=reason,
            failure_reason=None,
            metadata={"azora_refund_id": refund_id},
        )
        self._refunds.setdefault(intent.id, []).insert(0, made)
        self._refund_creates[refund_id] = (params, made)
        return made

    async def list_refunds(self, payment_intent_id: str) -> list[StripeRefund]:
        return list(self._refunds.get(payment_intent_id, []))

    # -------------------------------------------------------------- events: none

    async def list_events(
        self, *, created_after: int | None, limit: int = 100, starting_after: str | None = None
    ) -> list[dict[str, Any]]:
        return []

    def verify_event(self, payload: bytes, signature: str, secrets: list[str]) -> dict[str, Any]:
        raise InvalidSignature()
