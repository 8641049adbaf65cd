"""Receipts: the receipt of a payment, its PDF, and sending it again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from azora_payments.api.deps import CurrentUser, RequestActor, ServicesDep
from azora_payments.api.payments import PAYMENT_ID
from azora_payments.domain import receipts
from azora_payments.errors import PaymentNotFound

router = APIRouter(prefix="/api/payments", tags=["receipts"])


def _checked(payment_id: str) -> str:
    if not PAYMENT_ID.match(payment_id):
        raise PaymentNotFound()
    return payment_id


@router.get("/{payment_id}/receipt", responses={404: {"description": "receipt_not_ready"}})
async def get_receipt(payment_id: str, user: CurrentUser, services: ServicesDep) -> dict[str, Any]:
    return await receipts.get_receipt(db=services.db, user=user, payment_id=_checked(payment_id))


@router.get(
    "/{payment_id}/receipt.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
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


@router.post("/{payment_id}/receipt/email", status_code=202)
async def email_receipt(
    payment_id: str, user: CurrentUser, actor: RequestActor, services: ServicesDep
) -> dict[str, Any]:
    return await receipts.request_email(
        db=services.db,
        limiter=services.limiter,
        limit=services.settings.rate_limit_receipt_email,
        user=user,
        actor=actor,
        payment_id=_checked(payment_id),
    )
