"""Payments: process, history, details."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.convertors import Convertor, register_url_convertor

from azora_payments.addresses import plain_address
from azora_payments.api.body import idempotency_key, read_json, replaying_body, validate
from azora_payments.api.deps import CurrentUser, RequestActor, ServicesDep
from azora_payments.api.methods import PM_ID
from azora_payments.api.schemas import (
    AUTHENTICATED,
    AnyPayment,
    Payment,
    PaymentPage,
    PaymentStatus,
    problems,
)
from azora_payments.db.repositories.payments import HistoryFilter
from azora_payments.domain import history, money, payment_flow
from azora_payments.domain.flow_outcomes import Answer
from azora_payments.domain.idempotency import request_fingerprint
from azora_payments.errors import PROBLEM_JSON, Forbidden, PaymentNotFound, ValidationFailed

router = APIRouter(prefix="/api/payments", tags=["payments"], responses=AUTHENTICATED)
# The request an Idempotency-Key is kept for (stored with it: never change it).
PROCESS_PATH = "/api/payments/process"

PAYMENT_ID = re.compile(r"^pay_[0-9a-z]{26}$")
# The action paths beside `/{payment_id}`: with another method they must answer 405 (API.md,
# Errors), not be taken for a payment id and answered 404.
ACTION_SEGMENTS = ("process", "refund", "history", "methods")


class PaymentIdConvertor(Convertor[str]):
    regex = "(?!(?:" + "|".join(ACTION_SEGMENTS) + ")$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("payment_id", PaymentIdConvertor())
# Stripe allows 50 metadata keys; the service adds its own two (azora_payment_id, azora_user_id)
# and reserves the azora_ prefix, so what a caller sends always fits.
MAX_METADATA_KEYS = 48
RESERVED_METADATA_PREFIX = "azora_"


class ProcessIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=1, le=money.MAXIMUM_AMOUNT, description="Minor units, an integer")
    currency: str = Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217, any case")
    payment_method_id: str = Field(pattern=PM_ID)
    description: str | None = Field(default=None, max_length=1000)
    metadata: dict[str, Annotated[str, Field(max_length=500)]] = Field(
        default_factory=dict, max_length=MAX_METADATA_KEYS
    )
    save_payment_method: bool = False
    receipt_email: str | None = Field(default=None, max_length=254)

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not 1 <= len(key) <= 40:
                raise ValueError("keys must be 1 to 40 characters")
            if "[" in key or "]" in key:
                raise ValueError("keys cannot contain square brackets")
        return value

    @field_validator("receipt_email")
    @classmethod
    def _one_plain_address(cls, value: str | None) -> str | None:
        # `a@b.com,root` would otherwise reach two people: one address, as written.
        return None if value is None else plain_address(value)


def check_metadata(metadata: dict[str, str]) -> None:
    """Keys starting with azora_ are the service's own (422 naming each one)."""
    reserved = [k for k in metadata if k.lower().startswith(RESERVED_METADATA_PREFIX)]
    if reserved:
        raise ValidationFailed(
            "Some fields are not valid.",
            errors=[
                {
                    "field": f"metadata.{k}",
                    "message": f"keys starting with {RESERVED_METADATA_PREFIX} are reserved",
                }
                for k in reserved
            ],
        )


def check_charge(amount: int, currency: str, currencies: list[str]) -> str:
    """The currency, lower case, once it is one we take and `amount` a chargeable amount of it."""
    currency = currency.lower()
    if currency not in currencies:
        raise ValidationFailed(
            errors=[{"field": "currency", "message": f"{currency} is not a supported currency"}]
        )
    try:
        money.check_charge_amount(amount, currency)
    except money.InvalidAmount as exc:
        raise ValidationFailed(errors=[{"field": "amount", "message": str(exc)}]) from None
    return currency


def _check_money(body: ProcessIn, currencies: list[str]) -> payment_flow.PaymentRequest:
    check_metadata(body.metadata)
    currency = check_charge(body.amount, body.currency, currencies)
    return payment_flow.PaymentRequest(
        amount=body.amount,
        currency=currency,
        payment_method_id=body.payment_method_id,
        description=body.description,
        metadata=body.metadata,
        save_payment_method=body.save_payment_method,
        receipt_email=body.receipt_email,
    )


@router.post(
    "/process",
    status_code=201,
    openapi_extra=replaying_body(ProcessIn),
    response_model=Payment,
    responses={
        201: {"description": "The Payment (`requires_action` carries a `client_secret`)"},
        **problems(
            400,
            402,
            404,
            409,
            422,
            503,
            why={
                404: "payment_method_not_found",
                409: "In progress (`Retry-After`), a final failure, or Stripe's refusal",
                503: "Stripe unreachable: the same key later continues (`payment_id`)",
            },
        ),
    },
)
async def process_payment(
    request: Request, user: CurrentUser, actor: RequestActor, services: ServicesDep
) -> Response:
    data = await read_json(request)
    key = idempotency_key(request)
    body = validate(ProcessIn, data)
    payment_request = _check_money(body, services.settings.currencies)
    answer = await payment_flow.process(
        keys=services.idempotency,
        stripe=services.stripe,
        user=user,
        actor=actor,
        request=payment_request,
        key=key,
        fingerprint=request_fingerprint("POST", PROCESS_PATH, data),
        limits=services.declines,
        client_ip=request.state.countable_ip,
        path=PROCESS_PATH,
    )
    return replayable_response(answer)


def replayable_response(answer: Answer) -> Response:
    """The stored answer, byte for byte, marked when it is a replay."""
    stored = answer.stored
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    media_type = PROBLEM_JSON if stored.status >= 400 else "application/json"
    return Response(stored.body, status_code=stored.status, headers=headers, media_type=media_type)


@router.get("/history", response_model=PaymentPage, responses=problems(400))
async def payment_history(
    user: CurrentUser,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    status: PaymentStatus | None = None,
    created_gte: datetime | None = None,
    created_lt: datetime | None = None,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    stripe_payment_intent_id: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    if (user_id is not None or stripe_payment_intent_id is not None) and not user.is_operator:
        raise Forbidden("Only operators may look at other users' payments.")
    where = HistoryFilter(
        user_id=user_id if user.is_operator else user.id,
        status=status,
        created_gte=_utc(created_gte),
        created_lt=_utc(created_lt),
        stripe_payment_intent_id=stripe_payment_intent_id,
    )
    page = await history.history(db=services.db, user=user, where=where, limit=limit, cursor=cursor)
    return {"data": page.data, "has_more": page.has_more, "next_cursor": page.next_cursor}


@router.get("/{payment_id:payment_id}", response_model=AnyPayment, responses=problems(404))
async def get_payment(payment_id: str, user: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    if not PAYMENT_ID.match(payment_id):
        raise PaymentNotFound()
    return await history.get_payment(db=services.db, user=user, payment_id=payment_id)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
