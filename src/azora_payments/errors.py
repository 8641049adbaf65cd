"""The error tree and its RFC 9457 rendering.

Every error the service shows a client is an `AzoraError` with a status and a stable `code`;
`title` and `detail` are safe to show to an end user. The tree::

    AzoraError
    ├── BadRequest (400)                     bad_request
    │   ├── InvalidJson                      invalid_json
    │   ├── InvalidCursor                    invalid_cursor
    │   ├── IdempotencyKeyRequired           idempotency_key_required
    │   ├── IdempotencyKeyInvalid            idempotency_key_invalid
    │   └── InvalidSignature                 invalid_signature
    ├── Unauthenticated (401)                unauthenticated
    ├── CardError (402)                      card_declined, expired_card, … (Stripe's code)
    │   └── CardDeclined                     (stripe_gateway: carries the intent after it)
    ├── Forbidden (403)                      forbidden
    ├── NotFound (404)                       not_found
    │   ├── PaymentNotFound                  not_found
    │   ├── PaymentMethodNotFound            payment_method_not_found
    │   ├── ReceiptNotReady                  receipt_not_ready
    │   └── CheckoutSessionNotFound          not_found
    ├── MethodNotAllowed (405)               method_not_allowed
    ├── Conflict (409)                       conflict
    │   ├── IdempotencyRequestInProgress     idempotency_request_in_progress
    │   ├── PaymentNotRefundable             payment_not_refundable
    │   ├── PaymentFailed                    payment_failed (final: never charged again)
    │   ├── CheckoutSessionComplete          checkout_session_complete
    │   ├── CheckoutSessionExpired           checkout_session_expired
    │   └── RefundRefused                    refund_refused, or Stripe's: charge_disputed, …
    ├── PayloadTooLarge (413)                payload_too_large
    ├── ValidationFailed (422)               validation_error
    │   ├── IdempotencyKeyReused             idempotency_key_reused
    │   └── AmountExceedsRefundable          amount_exceeds_refundable
    ├── RateLimited (429)                    rate_limited
    ├── InternalError (500)                  internal_error
    └── ServiceUnavailable (503)             service_unavailable
        ├── StripeUnavailable                (stripe_gateway: Stripe down, slow or limiting)
        └── DatabaseUnavailable

Beside the tree, never shown to a client::

    StripeRejected (Exception)               Stripe refused a request as invalid: its code and
                                             param, for the domain to turn into one of the
                                             errors above; one nobody expected is a plain 500

The gateway's other failures (our keys, our configuration) are logged there and raised as
`InternalError`.
"""

from __future__ import annotations

from typing import Any, ClassVar

ERROR_TYPE_BASE = "https://docs.azora.dev/errors/"
PROBLEM_JSON = "application/problem+json"


class AzoraError(Exception):
    status: ClassVar[int] = 500
    code: str = "internal_error"
    title: str = "Something went wrong on our side."

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail or self.title)

    def problem(self, request_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": ERROR_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
            "code": self.code,
            "request_id": request_id,
        }
        body.update(self.extra)
        return body


class BadRequest(AzoraError):
    status = 400
    code = "bad_request"
    title = "The request could not be understood."


class InvalidJson(BadRequest):
    code = "invalid_json"
    title = "The request body is not valid JSON."


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    title = "The pagination cursor is not valid."


class IdempotencyKeyRequired(BadRequest):
    code = "idempotency_key_required"
    title = "An Idempotency-Key header is required."


class IdempotencyKeyInvalid(BadRequest):
    code = "idempotency_key_invalid"
    title = "The Idempotency-Key header must be 1 to 255 printable ASCII characters."


class InvalidSignature(BadRequest):
    code = "invalid_signature"
    title = "The webhook signature could not be verified."


class Unauthenticated(AzoraError):
    status = 401
    code = "unauthenticated"
    title = "Authentication is required."

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extra)


class CardError(AzoraError):
    """A card error from Stripe; `code` is Stripe's (card_declined, expired_card, …)."""

    status = 402
    code = "card_declined"
    title = "Your card was declined."


class Forbidden(AzoraError):
    status = 403
    code = "forbidden"
    title = "You are not allowed to do this."


class NotFound(AzoraError):
    status = 404
    code = "not_found"
    title = "Not found."


class PaymentNotFound(NotFound):
    title = "Payment not found."


class PaymentMethodNotFound(NotFound):
    code = "payment_method_not_found"
    title = "Payment method not found."


class ReceiptNotReady(NotFound):
    code = "receipt_not_ready"
    title = "The receipt is not ready yet."


class CheckoutSessionNotFound(NotFound):
    title = "This checkout link is not valid."


class MethodNotAllowed(AzoraError):
    status = 405
    code = "method_not_allowed"
    title = "This method is not allowed here."


class Conflict(AzoraError):
    status = 409
    code = "conflict"
    title = "The request conflicts with the current state."


class IdempotencyRequestInProgress(Conflict):
    code = "idempotency_request_in_progress"
    title = "A request with this Idempotency-Key is still being processed."


class PaymentNotRefundable(Conflict):
    code = "payment_not_refundable"
    title = "Only a succeeded payment can be refunded."


class PaymentFailed(Conflict):
    code = "payment_failed"
    title = "This payment failed. You were not charged; try again with a new request."


class CheckoutSessionComplete(Conflict):
    code = "checkout_session_complete"
    title = "This order has already been paid."


class CheckoutSessionExpired(Conflict):
    code = "checkout_session_expired"
    title = "This checkout link has expired. Nothing was charged."


class RefundRefused(Conflict):
    code = "refund_refused"
    title = "Stripe refused the refund."


class PayloadTooLarge(AzoraError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large."


class ValidationFailed(AzoraError):
    status = 422
    code = "validation_error"
    title = "The request is not valid."

    def __init__(
        self, detail: str | None = None, *, errors: list[dict[str, str]] | None = None, **extra: Any
    ) -> None:
        if errors is not None:
            extra["errors"] = errors
        super().__init__(detail, **extra)


class IdempotencyKeyReused(ValidationFailed):
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used with a different request."


class AmountExceedsRefundable(ValidationFailed):
    code = "amount_exceeds_refundable"
    title = "The amount exceeds what can still be refunded."


class RateLimited(AzoraError):
    status = 429
    code = "rate_limited"
    title = "Too many requests. Please slow down."

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class InternalError(AzoraError):
    status = 500
    code = "internal_error"
    title = "Something went wrong on our side."


class ServiceUnavailable(AzoraError):
    status = 503
    code = "service_unavailable"
    title = "The service is temporarily unavailable. Please try again."

    def __init__(self, detail: str | None = None, *, retry_after: int = 5, **extra: Any) -> None:
        extra.setdefault("retryable", True)
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extra)


class StripeUnavailable(ServiceUnavailable):
    title = "The payment provider is temporarily unavailable. Please try again."


class DatabaseUnavailable(ServiceUnavailable):
    title = "The service is temporarily unavailable. Please try again."


class StripeRejected(Exception):
    """Stripe refused a request as invalid (`InvalidRequestError`); `stripe_code` and `param`
    say why. Not an `AzoraError`: what a client sees is whatever the domain makes of it (a 404,
    409 or 422 of its own), and `api/problems.py` answers one that escapes with a plain 500."""

    def __init__(self, *, stripe_code: str | None, param: str | None, http_status: int) -> None:
        super().__init__(f"stripe rejected the request: {stripe_code} (param {param})")
        self.stripe_code = stripe_code
        self.param = param
        self.http_status = http_status
