"""`GET /api/audit`: the audit log for operators, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from azora_payments.api.deps import Operator, ServicesDep
from azora_payments.db.repositories import audit as audit_repo
from azora_payments.pagination import decode_cursor, encode_cursor

router = APIRouter(prefix="/api", tags=["audit"])


class AuditRecordOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    payment_id: str | None
    details: dict[str, Any]
    request_id: str | None
    client_ip: str | None


class AuditPage(BaseModel):
    data: list[AuditRecordOut]
    has_more: bool
    next_cursor: str | None


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    _: Operator,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    payment_id: Annotated[str | None, Query(max_length=40)] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    after = decode_cursor(cursor, int) if cursor else None
    async with services.db.transaction() as session:
        rows = await audit_repo.page(
            session,
            limit=limit + 1,
            after=after,
            payment_id=payment_id,
            actor=actor,
            action=action,
        )
    page = rows[:limit]
    has_more = len(rows) > limit
    return AuditPage(
        data=[AuditRecordOut.model_validate(row, from_attributes=True) for row in page],
        has_more=has_more,
        next_cursor=encode_cursor(page[-1].at, page[-1].id) if has_more else None,
    )
