"""The only module that speaks to Stripe: plain values out, our errors raised.

Built on the official SDK's `StripeClient` with async calls over httpx, explicit timeouts and the
SDK's own retries with exponential backoff (a `StripeClient` retries nothing unless told).
Every POST carries a deterministic idempotency key that this module builds from our own ids
(`StripeKeys` below: callers pass ids, never keys), so a retry, a race or a crash replays
Stripe's first answer instead of creating a second object.

Error mapping (Stripe class -> ours):

- `CardError` -> `CardDeclined` (402, Stripe's code, `decline_code`, a friendly message)
- `RateLimitError`, `APIError` (5xx), `APIConnectionError` -> `StripeUnavailable` (503,
  retryable) once the SDK's retries are spent
- `InvalidRequestError` -> `StripeRejected` carrying Stripe's code, for the domain to turn into
  its own errors; it is no `AzoraError`, so one nobody expected is a plain 500 (`api/problems.py`)
- `AuthenticationError`, `PermissionError`, `IdempotencyError`, anything else -> a loud log
  and `InternalError` (500): these are our bugs or our configuration, never the customer's
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import stripe

from azora_payments.config import Settings
from azora_payments.errors import (
    CardError,
    InternalError,
    InvalidSignature,
    StripeRejected,
    StripeUnavailable,
)
from azora_payments.metrics import STRIPE_REQUESTS
from azora_payments.request_timing import waiting_on_stripe

logger = logging.getLogger(__name__)


# What an end user may read for each of Stripe's card error codes: never Stripe internals, and
# lost/stolen cards are not named as such (Stripe's own advice).
FRIENDLY_CARD_MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "invalid_cvc": "Your card's security code is invalid.",
    "incorrect_number": "Your card number is incorrect.",
    "invalid_number": "Your card number is not valid.",
    "invalid_expiry_month": "Your card's expiration month is not valid.",
    "invalid_expiry_year": "Your card's expiration year is not valid.",
    "processing_error": "An error occurred while processing your card. Please try again.",
    "authentication_required": "Your bank needs you to authenticate this payment.",
    "card_velocity_exceeded": "Your card was declined: its limit has been reached.",
}
FRIENDLY_DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Please try again.",
}
DEFAULT_CARD_MESSAGE = "Your card was declined."


def friendly_card_message(code: str | None, decline_code: str | None) -> str:
    if decline_code and decline_code in FRIENDLY_DECLINE_MESSAGES:
        return FRIENDLY_DECLINE_MESSAGES[decline_code]
    return FRIENDLY_CARD_MESSAGES.get(code or "", DEFAULT_CARD_MESSAGE)


@dataclass(frozen=True, slots=True)
class Card:
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    # Stripe's fingerprint of the card number: the same card in every PaymentMethod.
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class StripePaymentMethod:
    id: str
    type: str
    customer: str | None
    card: Card | None
    created: int


@dataclass(frozen=True, slots=True)
class PaymentError:
    code: str | None
    decline_code: str | None
    message: str
    # The failed charge, and the fingerprint of the card it tried, when Stripe says.
    charge: str | None = None
    card_fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class StripeIntent:
    id: str
    status: str
    amount: int
    currency: str
    client_secret: str | None
    latest_charge: str | None
    payment_method: str | None
    customer: str | None
    metadata: dict[str, str]
    last_payment_error: PaymentError | None


@dataclass(frozen=True, slots=True)
class StripeRefund:
    id: str
    status: str
    amount: int
    currency: str
    charge: str | None
    payment_intent: str | None
    reason: str | None
    failure_reason: str | None
    metadata: dict[str, str] = field(default_factory=dict)


class CardDeclined(CardError):
    """Stripe declined the card; `intent` is the PaymentIntent as it stands after the decline."""

    def __init__(
        self,
        *,
        code: str,
        decline_code: str | None,
        intent: StripeIntent | None,
        charge_id: str | None,
        card_fingerprint: str | None = None,
    ) -> None:
        message = friendly_card_message(code, decline_code)
        super().__init__(message, code=code, title=message, decline_code=decline_code)
        self.decline_code = decline_code
        self.intent = intent
        self.charge_id = charge_id
        self.card_fingerprint = card_fingerprint

    @property
    def error(self) -> PaymentError:
        """The decline as Stripe's error answer tells it (the real reason)."""
        return PaymentError(
            self.code, self.decline_code, self.title, self.charge_id, self.card_fingerprint
        )


__all__ = [
    "Card",
    "CardDeclined",
    "PaymentError",
    "StripeGateway",
    "StripeIntent",
    "StripeKeys",
    "StripePaymentMethod",
    "StripeRefund",
    "StripeRejected",
    "friendly_card_message",
    "intent_from_object",
    "refund_from_object",
]


class StripeKeys:
    """Every Stripe idempotency key, from our ids. The strings never change: a request retried
    across a deploy must send the key its first try sent (Stripe keeps them for 24 hours)."""

    @staticmethod
    def customer(user_id: str) -> str:
        return f"azora:customer:{user_id}"

    @staticmethod
    def default_payment_method(customer_id: str, version: int, payment_method_id: str) -> str:
        return f"azora:default_pm:{customer_id}:{version}:{payment_method_id}"

    @staticmethod
    def attach(payment_method_id: str, customer_id: str) -> str:
        return f"azora:pm_attach:{payment_method_id}:{customer_id}"

    @staticmethod
    def detach(payment_method_id: str, customer_id: str | None) -> str:
        return f"azora:pm_detach:{payment_method_id}:{customer_id}"

    @staticmethod
    def payment_intent(payment_id: str) -> str:
        return f"azora:pi:{payment_id}"

    @staticmethod
    def cancel(intent_id: str) -> str:
        return f"azora:pi_cancel:{intent_id}"

    @staticmethod
    def refund(refund_id: str) -> str:
        return f"azora:refund:{refund_id}"


class _HTTPClient(stripe.HTTPXClient):
    """The SDK's httpx client with our first backoff delay (the SDK's is a fixed 0.5 s)."""

    def __init__(self, *, timeout: float, initial_delay: float) -> None:
        super().__init__(timeout=timeout)
        self._initial_delay = initial_delay

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> Any:
        # The SDK hands httpx its encoded form as `data=`, which httpx deprecates for raw text.
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        kwargs["content"] = kwargs.pop("data") or None
        return args, kwargs

    # Every exchange with Stripe, and the backoff between its retries, is time spent on Stripe
    # (the request's `Server-Timing` and own-time histogram), wherever the call comes from.
    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        with waiting_on_stripe():
            answer: tuple[bytes, int, Mapping[str, str]] = await super().request_async(
                method, url, headers, post_data
            )
        return answer

    async def sleep_async(self, secs: float) -> None:
        with waiting_on_stripe():
            await super().sleep_async(secs)  # type: ignore[no-untyped-call]

    def _sleep_time_seconds(self, num_retries: int) -> float:
        delay: float = min(self._initial_delay * (2 ** (num_retries - 1)), 5.0)
        jittered: float = self._add_jitter_time(delay)
        return max(self._initial_delay, jittered)


class StripeGateway:
    def __init__(self, settings: Settings, *, initial_retry_delay: float = 0.5) -> None:
        self._http = _HTTPClient(
            timeout=settings.stripe_timeout_seconds, initial_delay=initial_retry_delay
        )
        self._client = stripe.StripeClient(
            settings.stripe_secret_key or "sk_test_unset",
            base_addresses={"api": settings.stripe_api_base.rstrip("/")},
            max_network_retries=settings.stripe_max_network_retries,
            http_client=self._http,
        )
        self.livemode = settings.stripe_livemode

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    # -------------------------------------------------------------- customers

    async def create_customer(self, *, user_id: str, email: str | None, name: str | None) -> str:
        params: stripe.params.CustomerCreateParams = {"metadata": {"azora_user_id": user_id}}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        customer = await self._call(
            "customer.create",
            lambda: self._client.v1.customers.create_async(
                params, {"idempotency_key": StripeKeys.customer(user_id)}
            ),
        )
        return str(customer["id"])

    async def default_payment_method(self, customer_id: str) -> str | None:
        customer = await self._call(
            "customer.retrieve", lambda: self._client.v1.customers.retrieve_async(customer_id)
        )
        settings = customer.get("invoice_settings") or {}
        return _id_of(settings.get("default_payment_method"))

    async def set_default_payment_method(
        self, *, customer_id: str, payment_method_id: str, version: int
    ) -> None:
        """`version` numbers this customer's changes of default: A -> B -> A within Stripe's
        24 h must not replay the first answer (Stripe would keep B while we say A)."""
        params: stripe.params.CustomerUpdateParams = {
            "invoice_settings": {"default_payment_method": payment_method_id}
        }
        key = StripeKeys.default_payment_method(customer_id, version, payment_method_id)
        await self._call(
            "customer.update",
            lambda: self._client.v1.customers.update_async(
                customer_id, params, {"idempotency_key": key}
            ),
        )

    # -------------------------------------------------------------- payment methods

    async def retrieve_payment_method(self, payment_method_id: str) -> StripePaymentMethod:
        pm = await self._call(
            "payment_method.retrieve",
            lambda: self._client.v1.payment_methods.retrieve_async(payment_method_id),
        )
        return _payment_method(pm)

    async def attach_payment_method(
        self, *, payment_method_id: str, customer_id: str
    ) -> StripePaymentMethod:
        pm = await self._call(
            "payment_method.attach",
            lambda: self._client.v1.payment_methods.attach_async(
                payment_method_id,
                {"customer": customer_id},
                {"idempotency_key": StripeKeys.attach(payment_method_id, customer_id)},
            ),
        )
        return _payment_method(pm)

    async def detach_payment_method(
        self, *, payment_method_id: str, customer_id: str | None
    ) -> None:
        """`customer_id` is the customer we saved it for (part of the key only)."""
        key = StripeKeys.detach(payment_method_id, customer_id)
        await self._call(
            "payment_method.detach",
            lambda: self._client.v1.payment_methods.detach_async(
                payment_method_id, None, {"idempotency_key": key}
            ),
        )

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
        """Create and confirm at once; a decline raises `CardDeclined` carrying the intent. One
        key per payment: a resumed or repeated call gets the PaymentIntent the first one made."""
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": amount,
            "currency": currency,
            "customer": customer_id,
            "payment_method": payment_method_id,
            "confirm": True,
            # Cards only, and never a redirect: 3-D Secure is completed by Stripe.js in place.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {**metadata, "azora_payment_id": payment_id, "azora_user_id": user_id},
        }
        if description:
            params["description"] = description
        # Never `receipt_email`: Stripe would send its own receipt, with another number.
        if save_payment_method:
            params["setup_future_usage"] = "off_session"
        intent = await self._call(
            "payment_intent.create",
            lambda: self._client.v1.payment_intents.create_async(
                params, {"idempotency_key": StripeKeys.payment_intent(payment_id)}
            ),
        )
        return _intent(intent)

    async def retrieve_payment_intent(self, intent_id: str) -> StripeIntent:
        intent = await self._call(
            "payment_intent.retrieve",
            lambda: self._client.v1.payment_intents.retrieve_async(intent_id),
        )
        return _intent(intent)

    async def cancel_payment_intent(self, intent_id: str, *, reason: str) -> StripeIntent:
        """Cancel an intent that must never be confirmed again (a failed or abandoned payment).
        `reason` is one of Stripe's `cancellation_reason`s (`abandoned`, `duplicate`, ...)."""
        params: stripe.params.PaymentIntentCancelParams = {"cancellation_reason": reason}
        intent = await self._call(
            "payment_intent.cancel",
            lambda: self._client.v1.payment_intents.cancel_async(
                intent_id, params, {"idempotency_key": StripeKeys.cancel(intent_id)}
            ),
        )
        return _intent(intent)

    async def search_payment_intents(self, payment_id: str) -> list[StripeIntent]:
        """Stripe's search by the id we put in the metadata (it lags writes by up to a minute)."""
        result = await self._call(
            "payment_intent.search",
            lambda: self._client.v1.payment_intents.search_async(
                {"query": f"metadata['azora_payment_id']:'{payment_id}'", "limit": 10}
            ),
        )
        return [_intent(pi) for pi in result.get("data") or []]

    async def list_customer_intents_for(
        self, *, payment_id: str, customer_id: str, created_after: int
    ) -> list[StripeIntent]:
        """The customer's intents created since `created_after` that carry our payment id
        (the list has no lag, unlike search; bounded: 10 pages)."""
        params: stripe.params.PaymentIntentListParams = {
            "customer": customer_id,
            "created": {"gte": created_after},
            "limit": 100,
        }
        found: list[StripeIntent] = []
        for _ in range(10):
            page = await self._call(
                "payment_intent.list",
                lambda: self._client.v1.payment_intents.list_async(params),
            )
            data = page.get("data") or []
            found += [
                _intent(pi)
                for pi in data
                if (_get(pi, "metadata") or {}).get("azora_payment_id") == payment_id
            ]
            if not page.get("has_more") or not data:
                break
            params["starting_after"] = str(data[-1]["id"])
        return found

    async def find_payment_intents_for(
        self, *, payment_id: str, customer_id: str | None, created_after: int
    ) -> list[StripeIntent]:
        """Every intent Stripe holds for our payment, asked both ways: search by our metadata,
        and the customer's recent intents (search lags; the list needs the customer). An empty
        answer means Stripe has none; a failure of either question raises."""
        found = {pi.id: pi for pi in await self.search_payment_intents(payment_id)}
        if customer_id is not None:
            listed = await self.list_customer_intents_for(
                payment_id=payment_id, customer_id=customer_id, created_after=created_after
            )
            found.update({pi.id: pi for pi in listed})
        return list(found.values())

    # -------------------------------------------------------------- refunds

    async def create_refund(
        self,
        *,
        refund_id: str,
        payment_intent_id: str,
        amount: int,
        reason: str | None,
    ) -> StripeRefund:
        """One key per refund row: sent again (a retry, reconciliation), it is the same refund."""
        params: stripe.params.RefundCreateParams = {
            "payment_intent": payment_intent_id,
            "amount": amount,
            "metadata": {"azora_refund_id": refund_id},
        }
        if reason:
            params["reason"] = reason
        refund = await self._call(
            "refund.create",
            lambda: self._client.v1.refunds.create_async(
                params, {"idempotency_key": StripeKeys.refund(refund_id)}
            ),
        )
        return refund_from_object(refund)

    async def list_refunds(self, payment_intent_id: str) -> list[StripeRefund]:
        result = await self._call(
            "refund.list",
            lambda: self._client.v1.refunds.list_async(
                {"payment_intent": payment_intent_id, "limit": 100}
            ),
        )
        return [refund_from_object(r) for r in result.get("data") or []]

    # -------------------------------------------------------------- events

    async def list_events(
        self, *, created_after: int | None, limit: int = 100, starting_after: str | None = None
    ) -> list[dict[str, Any]]:
        """Events newest first, as Stripe lists them, as plain dicts."""
        params: stripe.params.EventListParams = {"limit": limit}
        if created_after is not None:
            params["created"] = {"gt": created_after}
        if starting_after:
            params["starting_after"] = starting_after
        result = await self._call("event.list", lambda: self._client.v1.events.list_async(params))
        events: list[dict[str, Any]] = result.get("data") or []
        return events

    def verify_event(self, payload: bytes, signature: str, secrets: list[str]) -> dict[str, Any]:
        """The event, if `signature` was made over the raw `payload` with any of `secrets`
        (rotation) within 300 s; else `InvalidSignature`. No secret configured: nothing verifies.
        """
        text = payload.decode("utf-8", errors="replace")
        for secret in secrets:
            try:
                stripe.WebhookSignature.verify_header(text, signature, secret, tolerance=300)
            except stripe.SignatureVerificationError:
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                # Signed by us, yet not JSON: a broken sender, not something to retry.
                raise InvalidSignature("The event body is not JSON.") from None
            if not isinstance(event, dict):
                raise InvalidSignature("The event body is not an event.")
            return event
        raise InvalidSignature()

    # -------------------------------------------------------------- the error mapping

    async def _call(self, operation: str, call: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
        """Run one SDK call; its answer as plain dicts and lists, its errors as ours."""
        try:
            result = await call()
        except stripe.StripeError as exc:
            STRIPE_REQUESTS.labels(operation, type(exc).__name__).inc()
            _raise_mapped(operation, exc)
        STRIPE_REQUESTS.labels(operation, "ok").inc()
        plain: dict[str, Any] = result.to_dict()
        return plain


def _raise_mapped(operation: str, exc: stripe.StripeError) -> NoReturn:
    if isinstance(exc, stripe.CardError):
        error = _error_body(exc)
        intent_data = error.get("payment_intent")
        raise CardDeclined(
            code=exc.code or "card_declined",
            decline_code=error.get("decline_code"),
            intent=_intent(intent_data) if isinstance(intent_data, dict) else None,
            charge_id=_id_of(error.get("charge")),
            card_fingerprint=_fingerprint_of(error.get("payment_method")),
        ) from None
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError | stripe.APIError):
        logger.warning("stripe unavailable during %s: %s", operation, type(exc).__name__)
        raise StripeUnavailable() from None
    if isinstance(exc, stripe.InvalidRequestError):
        raise StripeRejected(
            stripe_code=exc.code, param=exc.param, http_status=exc.http_status or 400
        ) from None
    # Authentication, permission and idempotency errors are ours to fix, not the customer's.
    logger.error(
        "stripe refused %s: %s (status %s, code %s)",
        operation,
        type(exc).__name__,
        exc.http_status,
        exc.code,
    )
    raise InternalError() from None


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _id_of(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    ident = value.get("id") if isinstance(value, dict) else None
    return str(ident) if ident else None


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _fingerprint_of(pm: Any) -> str | None:
    fingerprint = _get(_get(pm, "card"), "fingerprint")
    return str(fingerprint) if fingerprint else None


def _payment_method(pm: Any) -> StripePaymentMethod:
    card = _get(pm, "card")
    return StripePaymentMethod(
        id=str(pm["id"]),
        type=str(_get(pm, "type") or "card"),
        customer=_id_of(_get(pm, "customer")),
        card=Card(
            brand=_get(card, "brand"),
            last4=_get(card, "last4"),
            exp_month=_get(card, "exp_month"),
            exp_year=_get(card, "exp_year"),
            fingerprint=_get(card, "fingerprint"),
        )
        if card
        else None,
        created=int(_get(pm, "created") or 0),
    )


def _intent(pi: Any) -> StripeIntent:
    error = _get(pi, "last_payment_error")
    metadata = _get(pi, "metadata") or {}
    return StripeIntent(
        id=str(pi["id"]),
        status=str(pi["status"]),
        amount=int(pi["amount"]),
        currency=str(pi["currency"]),
        client_secret=_get(pi, "client_secret"),
        latest_charge=_id_of(_get(pi, "latest_charge")),
        payment_method=_id_of(_get(pi, "payment_method")),
        customer=_id_of(_get(pi, "customer")),
        metadata={str(k): str(v) for k, v in dict(metadata).items()},
        last_payment_error=PaymentError(
            code=_get(error, "code"),
            decline_code=_get(error, "decline_code"),
            message=friendly_card_message(_get(error, "code"), _get(error, "decline_code")),
            charge=_id_of(_get(error, "charge")),
            card_fingerprint=_fingerprint_of(_get(error, "payment_method")),
        )
        if error
        else None,
    )


def intent_from_object(obj: Any) -> StripeIntent:
    """A PaymentIntent from a webhook event's `data.object`."""
    return _intent(obj)


def refund_from_object(refund: Any) -> StripeRefund:
    metadata = _get(refund, "metadata") or {}
    return StripeRefund(
        id=str(refund["id"]),
        status=str(refund["status"]),
        amount=int(refund["amount"]),
        currency=str(refund["currency"]),
        charge=_id_of(_get(refund, "charge")),
        payment_intent=_id_of(_get(refund, "payment_intent")),
        reason=_get(refund, "reason"),
        failure_reason=_get(refund, "failure_reason"),
        metadata={str(k): str(v) for k, v in dict(metadata).items()},
    )
