"""`POST /api/webhooks/stripe`: Stripe's deliveries, verified on the raw body and recorded
before they are acknowledged (no JWT: the signature is the authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from azora_payments.api.deps import ServicesDep
from azora_payments.domain import events

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


class Received(BaseModel):
    received: bool = True


@router.post(
    "/stripe",
    response_model=Received,
    responses={
        400: {"description": "Bad or missing signature, or a stale timestamp"},
        500: {"description": "Not recorded: Stripe will deliver it again"},
    },
)
async def stripe_webhook(request: Request, services: ServicesDep) -> Received:
    await events.ingest(
        db=services.db,
        stripe=services.stripe,
        secrets=services.settings.stripe_webhook_secret,
        payload=await request.body(),
        signature=request.headers.get("stripe-signature"),
    )
    return Received()
