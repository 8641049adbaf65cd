"""Receipts: the receipt of a payment, its PDF, and sending it again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from azora_payments.addresses import plain_address
from azora_payments.api.body import read_json, validate
from azora_payments.api.deps import CurrentUser, RequestActor, ServicesDep
from azora_payments.api.payments import PAYMENT_ID
from azora_payments.api.schemas import AUTHENTICATED, Receipt, problems
from azora_payments.domain import receipts
from azora_payments.errors import PaymentNotFound

router = APIRouter(prefix="/api/payments", tags=["receipts"], responses=AUTHENTICATED)


def _checked(payment_id: str) -> str:
    if not PAYMENT_ID.match(payment_id):
        raise PaymentNotFound()
    return payment_id


@router.get(
    "/{payment_id}/receipt",
    response_model=Receipt,
    responses=problems(404, why={404: "Not found, or receipt_not_ready"}),
)
async def get_receipt(payment_id: str, user: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return await receipts.get_receipt(db=services.db, user=user, payment_id=_checked(payment_id))


@router.get(
    "/{payment_id}/receipt.pdf",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
        **problems(404, why={404: "Not found, or receipt_not_ready"}),
    },
)
async def get_receipt_pdf(payment_id: str, user: CurrentUser, services: ServicesDep) -> Response:
    stored = await receipts.get_pdf(
        db=services.db,
        storage=services.storage,
        user=user,
        payment_id=_checked(payment_id),
        settings=services.settings,
    )
    headers = {"Content-Disposition": f'inline; filename="{stored.number}.pdf"'}
    if stored.version is not None:
        headers["X-Receipt-Version"] = str(stored.version)
    return Response(stored.data, media_type="application/pdf", headers=headers)


class ResendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=254, description="Operators only")

    @field_validator("email")
    @classmethod
    def _one_plain_address(cls, value: str | None) -> str | None:
        return None if value is None else plain_address(value)


@router.post(
    "/{payment_id}/receipt/email",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": ResendIn.model_json_schema()}},
        }
    },
    response_model=Receipt,
    responses=problems(
        400, 404, 429, why={429: "Too many re-sends for this payment or this caller"}
    ),
)
async def email_receipt(
    payment_id: str, request: Request, user: CurrentUser, actor: RequestActor, services: ServicesDep
) -> dict[str, Any]:
    # The body is optional: an empty one asks for the payment's own address.
    body = validate(ResendIn, await read_json(request)) if await request.body() else ResendIn()
    settings = services.settings
    return await receipts.request_email(
        db=services.db,
        limits=receipts.ResendLimits(
            per_payment=settings.rate_limit_receipt_email,
            per_user=settings.rate_limit_receipt_email_user,
        ),
        user=user,
        actor=actor,
        payment_id=_checked(payment_id),
        email=body.email,
    )
