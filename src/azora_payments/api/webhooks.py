"""`POST /api/webhooks/stripe`: Stripe's deliveries, verified on the raw body and recorded
before they are acknowledged (no JWT: the signature is the authentication).

The FastAPI route documents the endpoint; `install` puts a plain Starlette route for the same
path and method ahead of it, which is what answers. The endpoint takes no parameters, so FastAPI's
dependency solving, request parsing and response validation were only cost here (a fifth of the
ingest's CPU in its profile). Everything around it stays: the edge middleware (body limit, failure
limit, headers, metrics), the exception handlers (problem bodies), the router's 405.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response
from starlette.routing import Route

from azora_payments.api.deps import ServicesDep
from azora_payments.api.schemas import ANY_PROBLEM, Received, problems
from azora_payments.domain import events
from azora_payments.services import Services

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], responses=ANY_PROBLEM)
PATH = "/api/webhooks/stripe"
# What FastAPI answered for `Received()`: the model's compact JSON.
RECEIVED_BODY = Received().model_dump_json().encode()


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
    await _ingest(request, services)
    return Received()


async def _receive(request: Request) -> Response:
    await _ingest(request, request.app.state.services)
    return Response(RECEIVED_BODY, media_type="application/json")


async def _ingest(request: Request, services: Services) -> None:
    await events.ingest(
        db=services.db,
        stripe=services.stripe,
        secrets=services.settings.stripe_webhook_secret,
        payload=await request.body(),
        signature=request.headers.get("stripe-signature"),
    )


def install(app: FastAPI) -> None:
    """Answer the webhook through the plain route: first, so that it matches before the
    documented one (which it must come after: `router` is included already)."""
    app.router.routes.insert(0, Route(PATH, _receive, methods=["POST"], include_in_schema=False))
