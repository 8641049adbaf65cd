"""What the service asks of Stripe, as a Protocol: the real gateway and a test fake both fit it.

Typing only: this module imports neither ``stripe`` nor the gateway at run time. The real
``azora_payments.stripe_gateway.StripeGateway`` satisfies :class:`StripeGateway` structurally,
which the assignment under ``TYPE_CHECKING`` below makes ``mypy --strict`` prove on every run:
a method added to, renamed in or re-typed in the real gateway without the Protocol following
(or the reverse) fails the type check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from azora_payments.stripe_gateway import StripeGateway as RealStripeGateway
    from azora_payments.stripe_gateway import (
        StripeIntent,
        StripePaymentMethod,
        StripeRefund,
    )


class StripeGateway(Protocol):
    """The calls the domain makes to Stripe; plain values out, our errors raised."""

    # Whether the key is a live one: reconciliation skips events of the other mode.
    livemode: bool

    async def close(self) -> None: ...

    async def create_customer(
        self, *, user_id: str, email: str | None, name: str | None
    ) -> str: ...

    async def default_payment_method(self, customer_id: str) -> str | None: ...

    async def set_default_payment_method(
        self, *, customer_id: str, payment_method_id: str, version: int
    ) -> None: ...

    async def retrieve_payment_method(self, payment_method_id: str) -> StripePaymentMethod: ...

    async def attach_payment_method(
        self, *, payment_method_id: str, customer_id: str
    ) -> StripePaymentMethod: ...

    async def detach_payment_method(
        self, *, payment_method_id: str, customer_id: str | None
    ) -> None: ...

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
    ) -> StripeIntent: ...

    async def retrieve_payment_intent(self, intent_id: str) -> StripeIntent: ...

    async def cancel_payment_intent(self, intent_id: str, *, reason: str) -> StripeIntent: ...

    async def search_payment_intents(self, payment_id: str) -> list[StripeIntent]: ...

    async def list_customer_intents_for(
        self, *, payment_id: str, customer_id: str, created_after: int
    ) -> list[StripeIntent]: ...

    async def find_payment_intents_for(
        self, *, payment_id: str, customer_id: str | None, created_after: int
    ) -> list[StripeIntent]: ...

    async def create_refund(
        self,
        *,
        refund_id: str,
        payment_intent_id: str,
        amount: int,
        reason: str | None,
    ) -> StripeRefund: ...

    async def list_refunds(self, payment_intent_id: str) -> list[StripeRefund]: ...

    async def list_events(
        self, *, created_after: int | None, limit: int = 100, starting_after: str | None = None
    ) -> list[dict[str, Any]]: ...

    def verify_event(
        self, payload: bytes, signature: str, secrets: list[str]
    ) -> dict[str, Any]: ...


if TYPE_CHECKING:
    # The proof: mypy rejects this assignment unless the real gateway fits the Protocol.
    def _the_real_gateway_fits(real: RealStripeGateway) -> StripeGateway:
        return real
