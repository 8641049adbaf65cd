"""Checkout sessions: created and read by the product's backend, paid with the session id."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from azora_payments.addresses import plain_address
from azora_payments.api.body import idempotency_key, read_json, replaying_body, validate
from azora_payments.api.deps import Backend, RequestActor, ServicesDep
from azora_payments.api.methods import PM_ID
from azora_payments.api.payments import (
    MAX_METADATA_KEYS,
    ProcessIn,
    check_charge,
    check_metadata,
    replayable_response,
)
from azora_payments.api.schemas import (
    ANY_PROBLEM,
    CheckoutSession,
    Payment,
    problems,
)
from azora_payments.config import Settings
from azora_payments.domain import checkout, money
from azora_payments.domain.audit import Actor
from azora_payments.domain.idempotency import request_fingerprint
from azora_payments.errors import CheckoutSessionNotFound, ValidationFailed

router = APIRouter(prefix="/api/checkout", tags=["checkout"], responses=ANY_PROBLEM)
# The requests Idempotency-Keys are kept for (stored with them: never change them).
CREATE_PATH = "/api/checkout/sessions"


def pay_path(checkout_id: str) -> str:
    return f"/api/checkout/sessions/{checkout_id}/pay"


SESSION_ID = re.compile(r"^cs_[0-9a-z]{32}$")


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sub: str = Field(min_length=1, max_length=255, description="The customer's user id")
    email: str | None = Field(default=None, max_length=254)
    name: str | None = Field(default=None, max_length=255)

    @field_validator("email")
    @classmethod
    def _one_plain_address(cls, value: str | None) -> str | None:
        # The receipt goes there: one address, as for a payment's receipt_email.
        return None if value is None else plain_address(value)


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: CustomerIn
    amount: int = Field(ge=1, le=money.MAXIMUM_AMOUNT, description="Minor units, an integer")
    currency: str = Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217, any case")
    description: str | None = Field(default=None, max_length=1000)
    metadata: dict[str, Annotated[str, Field(max_length=500)]] = Field(max_length=MAX_METADATA_KEYS)
    return_url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    expires_in_minutes: int = Field(default=60, ge=5, le=24 * 60)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        # The same rules as a payment's metadata, which it becomes; and the order it pays.
        ProcessIn._metadata_keys(value)
        if not value.get("order_id"):
            raise ValueError("order_id is required: the order this session pays")
        return value


class PayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method_id: str = Field(pattern=PM_ID, description="A `pm_…` id from Stripe.js")
    save_payment_method: bool = False


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_return_url(url: str, settings: Settings) -> None:
    """Outside dev the customer is sent back over https (a loopback address excepted)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValidationFailed(errors=[{"field": "return_url", "message": "needs a host"}])
    if settings.environment != "dev" and parts.scheme != "https" and parts.hostname not in LOOPBACK:
        raise ValidationFailed(
            errors=[{"field": "return_url", "message": "must be https:// outside dev"}]
        )


def checked_id(checkout_id: str) -> str:
    if not SESSION_ID.match(checkout_id):
        raise CheckoutSessionNotFound()
    return checkout_id


@router.post(
    "/sessions",
    status_code=201,
    openapi_extra=replaying_body(SessionIn),
    response_model=CheckoutSession,
    responses=problems(400, 401, 403, 409, 422, 429, 500, 503),
)
async def create_session(
    request: Request, caller: Backend, actor: RequestActor, services: ServicesDep
) -> Response:
    data = await read_json(request)
    key = idempotency_key(request)
    body = validate(SessionIn, data)
    check_metadata(body.metadata)
    currency = check_charge(body.amount, body.currency, services.settings.currencies)
    check_return_url(body.return_url, services.settings)
    session_request = checkout.SessionRequest(
        customer=checkout.Customer(
            sub=body.customer.sub, email=body.customer.email, name=body.customer.name
        ),
        amount=body.amount,
        currency=currency,
        description=body.description,
        metadata=body.metadata,
        return_url=body.return_url,
        expires_in_minutes=body.expires_in_minutes,
    )
    answer = await checkout.create(
        keys=services.idempotency,
        caller=caller,
        actor=actor,
        request=session_request,
        key=key,
        path=CREATE_PATH,
        fingerprint=request_fingerprint("POST", CREATE_PATH, data),
    )
    return replayable_response(answer)


@router.get(
    "/sessions/{checkout_id}",
    response_model=CheckoutSession,
    responses=problems(401, 403, 404, 422, 429, 500, 503),
)
async def get_session(checkout_id: str, caller: Backend, services: ServicesDep) -> dict[str, Any]:
    return await checkout.get_for_backend(
        db=services.db, caller=caller, checkout_id=checked_id(checkout_id)
    )


@router.post(
    "/sessions/{checkout_id}/pay",
    status_code=201,
    openapi_extra=replaying_body(PayIn, key_header=False),
    response_model=Payment,
    responses={
        200: {"description": "The attempt under way, as it stands", "model": Payment},
        **problems(
            400,
            402,
            404,
            409,
            422,
            429,
            500,
            503,
            why={
                402: "Card declined: another card may pay the same session",
                409: "Already paid, or expired",
                503: "Retry: the same attempt continues, never a second charge",
            },
        ),
    },
)
async def pay_session(checkout_id: str, request: Request, services: ServicesDep) -> Response:
    """No token: the session id is the customer's credential, good for this payment only."""
    body = validate(PayIn, await read_json(request))
    checkout_id = checked_id(checkout_id)
    await services.limiter.check(services.settings.rate_limit_user, "checkout", checkout_id)
    answer = await checkout.pay(
        keys=services.idempotency,
        stripe=services.stripe,
        origin=Actor(
            "checkout", request_id=request.state.request_id, client_ip=request.state.client_ip
        ),
        checkout_id=checkout_id,
        payment_method_id=body.payment_method_id,
        save_payment_method=body.save_payment_method,
        limits=services.declines,
        client_ip=request.state.countable_ip,
        path=pay_path(checkout_id),
    )
    return replayable_response(answer)
