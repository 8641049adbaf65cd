"""`POST /api/webhooks/stripe`: Stripe's deliveries, verified on the raw body and recorded
before they are acknowledged (no JWT: the signature is the authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from azora_payments.api.deps import ServicesDep
from azora_payments.api.schemas import ANY_PROBLEM, Received, problems
from azora_payments.domain import events

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], responses=ANY_PROBLEM)


@router.post(
    "/stripe",
    response_model=Received,
    responses=problems(
        400,
        413,
        429,
        500,
        why={
            400: "invalid_signature: bad or missing signature, or a stale timestamp",
            429: "Too many failed signature or size checks from this address",
            500: "Not recorded: Stripe will deliver it again",
        },
    ),
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
