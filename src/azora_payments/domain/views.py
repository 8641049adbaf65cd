"""The Payment and Refund objects of API.md, as JSON-ready values: what the API answers, what
idempotent replays store, and what the product's backend is told."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from azora_payments.db.models import AuditRecord, Payment, Receipt, Refund
from azora_payments.domain.statuses import PaymentStatus


def refund_view(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "payment_id": refund.payment_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
        "reason": refund.reason,
        "stripe_refund_id": refund.stripe_refund_id,
        "created_at": _time(refund.created_at),
    }


def payment_view(
    payment: Payment,
    *,
    refunds: Sequence[Refund] = (),
    receipt: Receipt | None = None,
    audit_records: Sequence[AuditRecord] | None = None,
    operator: bool = False,
) -> dict[str, Any]:
    """The Payment object of API.md, as JSON-ready values."""
    card = None
    if payment.card_last4 is not None or payment.card_brand is not None:
        card = {
            "brand": payment.card_brand,
            "last4": payment.card_last4,
            "exp_month": payment.card_exp_month,
            "exp_year": payment.card_exp_year,
        }
    failure = None
    if payment.status == PaymentStatus.FAILED and (payment.failure_code or payment.failure_message):
        failure = {
            "code": payment.failure_code,
            "decline_code": payment.failure_decline_code,
            "message": payment.failure_message,
        }
    view: dict[str, Any] = {
        "id": payment.id,
        "status": payment.status,
        "amount": payment.amount,
        "currency": payment.currency,
        "amount_refunded": payment.amount_refunded,
        "description": payment.description,
        "metadata": dict(payment.metadata_ or {}),
        "payment_method": card,
        "stripe_payment_intent_id": payment.stripe_payment_intent_id,
        "client_secret": payment.client_secret
        if payment.status == PaymentStatus.REQUIRES_ACTION
        else None,
        "failure": failure,
        "receipt": {"id": receipt.id, "number": receipt.number} if receipt else None,
        "refunds": [refund_view(r) for r in refunds],
        "disputed": payment.disputed,
        "dispute_status": payment.dispute_status,
        "checkout_session_id": payment.checkout_session_id,
        "created_at": _time(payment.created_at),
        "updated_at": _time(payment.updated_at),
    }
    if operator:
        if failure is not None:
            # Stripe's real reason, which the customer is told as generic_decline when it
            # would help a card tester.
            failure["stripe_decline_code"] = payment.stripe_decline_code
        view["user_id"] = payment.user_id
        view["audit"] = [
            {
                "id": r.id,
                "at": _time(r.at),
                "actor": r.actor,
                "action": r.action,
                "details": r.details,
                "request_id": r.request_id,
            }
            for r in audit_records or ()
        ]
    return view


def _time(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))
