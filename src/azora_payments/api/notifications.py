"""`GET /api/notifications`: what the product's backend was told, oldest first (operators)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from azora_payments.api.deps import Operator, ServicesDep
from azora_payments.api.schemas import AUTHENTICATED, NotificationPage, problems
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
