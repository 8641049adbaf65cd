"""`GET /api/audit`: the audit log for operators, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from azora_payments.api.deps import Operator, ServicesDep
from azora_payments.api.schemas import AUTHENTICATED, AuditPage, AuditRecord, problems
from azora_payments.domain import audit

router = APIRouter(prefix="/api", tags=["audit"], responses=AUTHENTICATED)


@router.get("/audit", response_model=AuditPage, responses=problems(400))
async def list_audit(
    _: Operator,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    payment_id: Annotated[str | None, Query(max_length=40)] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    page = await audit.list_records(
        db=services.db,
        limit=limit,
        cursor=cursor,
        payment_id=payment_id,
        actor=actor,
        action=action,
    )
    return AuditPage(
        data=[AuditRecord.model_validate(row, from_attributes=True) for row in page.records],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )
