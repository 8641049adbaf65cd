"""Refunds: `POST /api/payments/refund`, for operators."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from azora_payments.api.body import idempotency_key, read_json, replaying_body, validate
from azora_payments.api.deps import Operator, RequestActor, ServicesDep
from azora_payments.api.payments import PAYMENT_ID, replayable_response
from azora_payments.api.schemas import AUTHENTICATED, Refund, problems
from azora_payments.domain import money, refund_flow
from azora_payments.domain.idempotency import request_fingerprint

router = APIRouter(prefix="/api/payments", tags=["refunds"], responses=AUTHENTICATED)
# The request an Idempotency-Key is kept for (stored with it: never change it); console refunds
# run under it too, so that they are the same request.
REFUND_PATH = "/api/payments/refund"


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_id: str = Field(pattern=PAYMENT_ID.pattern)
    amount: int | None = Field(
        default=None,
        ge=1,
        le=money.MAXIMUM_AMOUNT,
        description="Minor units; defaults to everything still refundable",
    )
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None


@router.post(
    "/refund",
    status_code=201,
    openapi_extra=replaying_body(RefundIn),
    response_model=Refund,
    responses=problems(
        400,
        404,
        409,
        422,
        why={
            409: "payment_not_refundable, in progress, or Stripe's refusal (`retryable: false`)",
            422: "amount_exceeds_refundable, or validation (`errors`)",
        },
    ),
)
async def refund_payment(
    request: Request, operator: Operator, actor: RequestActor, services: ServicesDep
) -> Response:
    data = await read_json(request)
    key = idempotency_key(request)
    body = validate(RefundIn, data)
    answer = await refund_flow.refund(
        keys=services.idempotency,
        stripe=services.stripe,
        operator=operator,
        actor=actor,
        request=refund_flow.RefundRequest(
            payment_id=body.payment_id, amount=body.amount, reason=body.reason
        ),
        key=key,
        path=REFUND_PATH,
        fingerprint=request_fingerprint("POST", REFUND_PATH, data),
    )
    return replayable_response(answer)
