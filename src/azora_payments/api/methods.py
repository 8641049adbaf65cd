"""Saved payment methods: save, list, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from azora_payments.api.body import body_schema, read_json, validate
from azora_payments.api.deps import CurrentUser, RequestActor, ServicesDep
from azora_payments.api.schemas import AUTHENTICATED, PaymentMethod, PaymentMethodList, problems
from azora_payments.domain import methods

router = APIRouter(
    prefix="/api/payments/methods", tags=["payment methods"], responses=AUTHENTICATED
)

PM_ID = r"^pm_[A-Za-z0-9_]{1,200}$"


class SaveMethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method_id: str = Field(pattern=PM_ID, description="A `pm_…` id from Stripe.js")
    set_default: bool = False


@router.post(
    "/save",
    status_code=201,
    response_model=PaymentMethod,
    openapi_extra=body_schema(SaveMethodIn),
    responses={
        200: {"description": "Already saved: the same object", "model": PaymentMethod},
        **problems(400, 404, why={404: "payment_method_not_found (another customer's)"}),
    },
)
async def save_method(
    request: Request,
    response: Response,
    user: CurrentUser,
    actor: RequestActor,
    services: ServicesDep,
) -> PaymentMethod:
    body = validate(SaveMethodIn, await read_json(request))
    result = await methods.save(
        db=services.db,
        stripe=services.stripe,
        user=user,
        actor=actor,
        payment_method_id=body.payment_method_id,
        set_default=body.set_default,
    )
    if not result.created:
        response.status_code = 200
    return PaymentMethod.of(result.method)


@router.get("/list", response_model=PaymentMethodList)
async def list_methods(user: CurrentUser, services: ServicesDep) -> PaymentMethodList:
    rows = await methods.list_methods(db=services.db, user=user)
    return PaymentMethodList(data=[PaymentMethod.of(row) for row in rows])


@router.delete(
    "/delete",
    status_code=204,
    response_class=Response,
    responses=problems(404, why={404: "payment_method_not_found"}),
)
async def delete_method(
    user: CurrentUser,
    actor: RequestActor,
    services: ServicesDep,
    payment_method_id: Annotated[str, Query(pattern=PM_ID)],
) -> Response:
    await methods.delete(
        db=services.db,
        stripe=services.stripe,
        user=user,
        actor=actor,
        payment_method_id=payment_method_id,
    )
    return Response(status_code=204)
