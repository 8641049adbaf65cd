"""`GET /api/notifications`: what the product's backend was told, oldest first (operators)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query

from azora_payments.api.deps import Operator, ServicesDep
from azora_payments.api.schemas import AUTHENTICATED, Notification, NotificationPage, problems
from azora_payments.domain import notifications

router = APIRouter(prefix="/api", tags=["notifications"], responses=AUTHENTICATED)


@router.get("/notifications", response_model=NotificationPage, responses=problems(400))
async def list_notifications(
    _: Operator,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    page = await notifications.listing(db=services.db, limit=limit, cursor=cursor)
    return {"data": page.data, "has_more": page.has_more, "next_cursor": page.next_cursor}


def document_deliveries(app: FastAPI) -> None:
    """The deliveries to NOTIFY_URL, as OpenAPI `webhooks`: what the product's backend receives."""

    answers: dict[int | str, dict[str, Any]] = {
        200: {"description": "Any 2xx: delivered"},
        "default": {"description": "Anything else: delivered again later"},
    }

    @app.webhooks.post("notification", responses=answers)
    def notification(
        body: Notification,
        azora_signature: Annotated[
            str,
            Header(
                alias="Azora-Signature",
                description='`t=<unix time>,v1=<hex HMAC-SHA256 of "t.body" with NOTIFY_SECRET>`',
            ),
        ],
    ) -> None:
        """A change of a payment or a refund, POSTed to NOTIFY_URL at least once, retried with
        backoff until a 2xx for up to three days; verify the signature as Stripe's."""
