"""Refunds that need a second operator: above CONSOLE_REFUND_APPROVAL_ABOVE, a console refund
is first a request; another operator approves it (the refund is then made, through the same
idempotent flow as the API's) or rejects it.

    request ─► [pending] ─► approve (another operator) ─► [approved] ─► refund flow
                        └─► reject ─► [rejected]

Deciding is one conditional update, so of two operators deciding at once one wins; the refund
runs under a key derived from the approval, so the winner retrying never refunds twice.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.auth import User
from azora_payments.db.models import RefundApproval
from azora_payments.db.repositories import console as console_repo
from azora_payments.db.repositories import payments as payments_repo
from azora_payments.db.repositories import refunds as refunds_repo
from azora_payments.db.repositories.upsert import insert_ignore
from azora_payments.db.types import utcnow
from azora_payments.domain import audit, refund_flow, refunds
from azora_payments.domain.flow_outcomes import Answer, Refunded
from azora_payments.domain.idempotency import IdempotencyKeys, request_fingerprint
from azora_payments.domain.statuses import PaymentStatus
from azora_payments.errors import (
    AmountExceedsRefundable,
    Conflict,
    Forbidden,
    NotFound,
    PaymentNotFound,
    PaymentNotRefundable,
)
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.ids import new_id

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"


class ApprovalNotFound(NotFound):
    code = "approval_not_found"
    title = "There is no such refund approval."


class ApprovalDecided(Conflict):
    code = "approval_decided"
    title = "This refund was already approved or rejected."


class SecondOperatorRequired(Forbidden):
    code = "second_operator_required"
    title = "Another operator must approve this refund."


def needs_approval(amount: int, threshold: int | None) -> bool:
    return threshold is not None and amount > threshold


def refund_fingerprint(request: refund_flow.RefundRequest, *, path: str) -> str:
    """The fingerprint the API gives the same refund (its JSON body, at the API's `path`)."""
    body = {"payment_id": request.payment_id, "amount": request.amount, "reason": request.reason}
    return request_fingerprint("POST", path, body)


async def request_approval(
    session: AsyncSession,
    *,
    request: refund_flow.RefundRequest,
    actor: audit.Actor,
    key: str,
) -> RefundApproval:
    """Record the request (once per form key), in the caller's transaction; the amount must
    still be refundable."""
    assert request.amount is not None
    request_key = hashlib.sha256(f"{actor.id}\0{key}".encode()).hexdigest()
    payment = await payments_repo.get(session, request.payment_id, for_update=True)
    if payment is None:
        raise PaymentNotFound()
    if payment.status != PaymentStatus.SUCCEEDED:
        raise PaymentNotRefundable(payment_id=payment.id)
    existing = await console_repo.approval_by_key(session, request_key)
    if existing is not None:
        return existing
    remaining = refunds.refundable(
        payment, list(await refunds_repo.of_payment(session, payment.id))
    )
    if request.amount > remaining:
        raise AmountExceedsRefundable(
            f"At most {remaining} can still be refunded.", payment_id=payment.id
        )
    approval_id = new_id("apr")
    await insert_ignore(
        session,
        RefundApproval,
        {
            "id": approval_id,
            "payment_id": payment.id,
            "amount": request.amount,
            "currency": payment.currency,
            "reason": request.reason,
            "status": PENDING,
            "requested_by": actor.id,
            "request_key": request_key,
            "created_at": utcnow(),
        },
    )
    row = await console_repo.approval_by_key(session, request_key)
    assert row is not None
    if row.id == approval_id:
        audit.record(
            session,
            actor=actor,
            action="refund.approval_requested",
            payment_id=payment.id,
            details={"approval_id": row.id, "amount": row.amount, "reason": row.reason},
        )
    return row


async def approve(
    *,
    keys: IdempotencyKeys,
    stripe: StripeGateway,
    approval_id: str,
    approver: User,
    actor: audit.Actor,
    path: str,
) -> Answer:
    """Approve and make the refund, as the refund request at `path` would. The requester cannot
    approve their own request."""
    async with keys.db.transaction() as session:
        row = await console_repo.approval(session, approval_id, for_update=True)
        if row is None:
            raise ApprovalNotFound()
        if row.requested_by == approver.id:
            raise SecondOperatorRequired(
                "You asked for this refund: a second operator has to approve it."
            )
        if row.status != PENDING and not (row.status == APPROVED and row.decided_by == approver.id):
            raise ApprovalDecided()
        if row.status == PENDING:
            await _decide(session, row, APPROVED, "refund.approved", by=approver.id, actor=actor)
        request = refund_flow.RefundRequest(
            payment_id=row.payment_id, amount=row.amount, reason=row.reason
        )
    answer = await refund_flow.refund(
        keys=keys,
        stripe=stripe,
        operator=approver,
        actor=actor,
        request=request,
        key=f"console-approval:{approval_id}",
        path=path,
        fingerprint=refund_fingerprint(request, path=path),
    )
    refund_id = _refund_id(answer)
    if refund_id is not None:
        async with keys.db.transaction() as session:
            row = await console_repo.approval(session, approval_id, for_update=True)
            assert row is not None
            row.refund_id = refund_id
    return answer


async def reject(session: AsyncSession, *, approval_id: str, actor: audit.Actor) -> None:
    """Reject the request, in the caller's transaction."""
    row = await console_repo.approval(session, approval_id)
    if row is None:
        raise ApprovalNotFound()
    await _decide(session, row, REJECTED, "refund.rejected", by=actor.id, actor=actor)


async def _decide(
    session: AsyncSession,
    row: RefundApproval,
    status: str,
    action: str,
    *,
    by: str,
    actor: audit.Actor,
) -> None:
    """Record the decision and its audit `action`, unless another operator decided first."""
    if not await console_repo.decide(
        session, approval_id=row.id, status=status, by=by, at=utcnow()
    ):
        raise ApprovalDecided()
    audit.record(
        session,
        actor=actor,
        action=action,
        payment_id=row.payment_id,
        details={"approval_id": row.id, "requested_by": row.requested_by},
    )


def _refund_id(answer: Answer) -> str | None:
    """The refund made, when it was (a replay tells it by its stored success)."""
    if isinstance(answer.outcome, Refunded):
        return str(answer.outcome.refund["id"])
    if answer.outcome is not None or not answer.stored.ok:
        return None
    value = json.loads(answer.stored.body).get("id")
    return value if isinstance(value, str) else None
