"""What the API answers, as typed models: the objects of API.md, their list envelopes and the
RFC 9457 problem, so that `/openapi.json` documents every success and every error.

Field order is the order API.md shows (a model dumps its fields in declaration order), and
`extra="forbid"` makes the schema say `additionalProperties: false`: an answer with a member the
model does not name fails response validation instead of leaking. The domain still builds the
JSON values (`domain/views.py`), because idempotent replays store them as bytes; routes that
answer a stored replay return those bytes untouched, and their model only documents them.

Times the domain renders as RFC 3339 text (`…Z`) stay text here (`Timestamp`), documented as
`date-time`, so that validating an answer never re-renders it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema
from pydantic.json_schema import models_json_schema
from typing_extensions import TypedDict

from azora_payments.api.response_headers import document_headers
from azora_payments.errors import PROBLEM_JSON

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]

PaymentStatus = Literal[
    "requires_payment_method", "requires_action", "processing", "succeeded", "failed", "canceled"
]
# Stripe's refund statuses: a refund made in Stripe's dashboard arrives with Stripe's own.
RefundStatus = Literal["pending", "requires_action", "succeeded", "failed", "canceled"]
CheckoutStatus = Literal["open", "complete", "expired"]
NotificationType = Literal[
    "payment.succeeded",
    "payment.failed",
    "payment.requires_action",
    "payment.canceled",
    "payment.disputed",
    "refund.succeeded",
    "refund.failed",
]


class Answer(BaseModel):
    """An object the API answers with: exactly these members, in this order."""

    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------- payments, refunds


class Card(Answer):
    """The card a payment was made with (never its number)."""

    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None


class Failure(Answer):
    """Why a payment failed: the same code and decline code as its 402."""

    code: str | None
    decline_code: str | None
    message: str | None


class OperatorFailure(Failure):
    stripe_decline_code: str | None = Field(
        description="Stripe's real reason, where the customer is told `generic_decline`"
    )


class ReceiptReference(Answer):
    id: str
    number: str


class Refund(Answer):
    id: str = Field(description="`rf_…`")
    payment_id: str
    amount: int = Field(description="Minor units")
    currency: str
    status: RefundStatus
    reason: str | None = Field(description="Stripe's: duplicate, fraudulent, requested_by_customer")
    stripe_refund_id: str | None
    created_at: Timestamp


class Payment(Answer):
    """The Payment object, as its owner sees it."""

    id: str = Field(description="`pay_…`")
    status: PaymentStatus
    amount: int = Field(description="Minor units")
    currency: str = Field(description="ISO 4217, lower case")
    amount_refunded: int = Field(description="Refunds pending or succeeded, in minor units")
    description: str | None
    metadata: dict[str, str]
    payment_method: Card | None
    stripe_payment_intent_id: str | None
    client_secret: str | None = Field(description="Only while `requires_action`")
    failure: Failure | None
    receipt: ReceiptReference | None
    refunds: list[Refund]
    disputed: bool
    dispute_status: str | None = Field(description="Stripe's latest dispute status")
    checkout_session_id: str | None
    created_at: Timestamp
    updated_at: Timestamp


class PaymentAuditEntry(Answer):
    id: int
    at: Timestamp
    actor: str
    action: str
    details: dict[str, Any]
    request_id: str | None


class OperatorPayment(Payment):
    """The Payment object as an operator sees it: whose it is, its audit records (oldest first)
    and Stripe's real decline reason."""

    failure: OperatorFailure | None
    user_id: str
    audit: list[PaymentAuditEntry]


# An operator's answer first: a client trying the shapes in order then keeps `user_id`.
AnyPayment = OperatorPayment | Payment


class PaymentPage(Answer):
    """`GET /api/payments/history`: newest first; the last page has `next_cursor: null`."""

    data: list[AnyPayment]
    has_more: bool
    next_cursor: str | None


# ----------------------------------------------------------------------------------- receipts


class Receipt(Answer):
    id: str = Field(description="`rcpt_…`")
    number: str
    payment_id: str
    amount: int = Field(description="Minor units")
    currency: str
    issued_at: Timestamp
    pdf_url: str
    emailed_at: Timestamp | None


# -------------------------------------------------------------------------------- saved cards


class PaymentMethod(Answer):
    id: str = Field(description="Stripe's `pm_…`")
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    is_default: bool
    created_at: AwareDatetime

    @classmethod
    def of(cls, row: Any) -> PaymentMethod:
        return cls.model_validate(row, from_attributes=True)


class PaymentMethodList(Answer):
    data: list[PaymentMethod]


# -------------------------------------------------------------------------------------- audit


class AuditRecord(Answer):
    id: int
    at: AwareDatetime
    actor: str
    action: str
    payment_id: str | None
    details: dict[str, Any]
    request_id: str | None
    client_ip: str | None


class AuditPage(Answer):
    data: list[AuditRecord]
    has_more: bool
    next_cursor: str | None


# ------------------------------------------------------------------------------ notifications


class NotifiedPayment(Payment):
    """A Payment as the product's backend is told it: whose it is, and never a client_secret."""

    client_secret: None = Field(description="Never sent to the backend")
    user_id: str


class NotifiedRefund(Refund):
    user_id: str


class Notification(Answer):
    """What is POSTed to NOTIFY_URL (signed in `Azora-Signature`), and listed again."""

    id: str = Field(description="`ntf_…`")
    type: NotificationType
    created_at: Timestamp
    data: NotifiedPayment | NotifiedRefund


class NotificationPage(Answer):
    """Oldest first; even the last page carries a cursor, to come back later for what is new."""

    data: list[Notification]
    has_more: bool
    next_cursor: str | None


# ----------------------------------------------------------------------------------- checkout


class CheckoutCustomer(Answer):
    sub: str
    email: str | None
    name: str | None


class CheckoutSession(Answer):
    id: str = Field(description="`cs_…`")
    object: Literal["checkout_session"]
    url: str = Field(description="The page to send the customer to, on this service's origin")
    status: CheckoutStatus
    customer: CheckoutCustomer
    amount: int = Field(description="Minor units")
    currency: str
    description: str | None
    metadata: dict[str, str]
    return_url: str
    expires_at: Timestamp
    payment_id: str | None
    created_at: Timestamp
    completed_at: Timestamp | None


# --------------------------------------------------------------------------------- operations


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "schema_not_current", "unavailable"]
    redis: Literal["ok", "unavailable", "not_configured"]


class Received(Answer):
    received: bool = True


# ----------------------------------------------------------------------------------- problems


class FieldError(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    field: Annotated[str, Field(description="The dotted path in the body, or a query parameter")]
    message: str


class Problem(TypedDict):
    """An RFC 9457 problem (`application/problem+json`): the six members every problem has, and
    the extension members API.md names where they apply."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None
    decline_code: NotRequired[str | None]
    retryable: NotRequired[bool]
    payment_id: NotRequired[str]
    errors: NotRequired[list[FieldError]]
    failure: NotRequired[Failure | None]


REF = "#/components/schemas/{model}"
# The header the idempotent POSTs require (API.md, Idempotency).
IDEMPOTENCY_KEY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
# The bodies routes read themselves (`api.body.body_schema`), documented among the components.
REQUEST_MODELS: dict[str, type[BaseModel]] = {}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="Problem")}}}
_WHY = {
    400: "Malformed: not JSON, a bad Idempotency-Key, a cursor that is not ours",
    401: "No valid token (`WWW-Authenticate: Bearer`)",
    402: "The card was declined (`decline_code`, `payment_id`)",
    403: "Authenticated but not allowed",
    404: "Not found (also another user's)",
    409: "Conflicts with the current state",
    413: "Body too large",
    422: "Validation failed (`errors`)",
    429: "Rate limited (`Retry-After`)",
    500: "Our fault, never with internals",
    503: "Stripe or the database unavailable (`Retry-After`, `retryable: true`)",
}


def problems(*statuses: int, why: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` for errors, each answered as a Problem in `application/problem+json`;
    `why` says what a status means on this route where the general description is too vague."""
    why = why or {}
    return {
        status: {
            "description": why.get(status, _WHY.get(status, "A problem")),
            "content": _PROBLEM_CONTENT,
        }
        for status in statuses
    }


# Every operation may answer a problem: anything not listed is documented as one, which also
# keeps FastAPI from documenting its own 422 shape that this API never sends.
ANY_PROBLEM: dict[int | str, dict[str, Any]] = {
    "default": {"description": "Any other error, as a Problem", "content": _PROBLEM_CONTENT}
}
# What every `/api` route behind a token can answer.
AUTHENTICATED = {**ANY_PROBLEM, **problems(401, 403, 422, 429, 500, 503)}


def operation_id(route: APIRoute) -> str:
    """The route's function name (`get_payment`), for the names of a generated client's calls
    instead of FastAPI's `get_payment_api_payments__payment_id__get`."""
    return route.name


def install_schema_components(app: FastAPI) -> None:
    """Add to the schema's components what FastAPI cannot see: Problem (the responses above refer
    to it under `application/problem+json`, a media type FastAPI's `model=` cannot give) and the
    request bodies routes read themselves, each with the models it names."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        document_headers(schema)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem = TypeAdapter(Problem).json_schema(ref_template=REF, mode="serialization")
        _, bodies = models_json_schema(
            [(model, "validation") for model in REQUEST_MODELS.values()], ref_template=REF
        )
        added = {**problem.pop("$defs", {}), "Problem": problem, **bodies.get("$defs", {})}
        for name, definition in added.items():
            # One name, one schema: a body model named like an answer would shadow it.
            if components.setdefault(name, definition) != definition:
                raise RuntimeError(f"two schemas named {name} in the OpenAPI components")
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
