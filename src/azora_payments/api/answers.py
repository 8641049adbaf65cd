"""The HTTP answer of each flow outcome: its status and its JSON text (problem+json for errors).

What this renders is what the idempotency layer stores with a key and replays byte for byte:
`install()` (called where the services are built) hands `render` to it, so the domain never
builds a status code or a problem body. A problem's `request_id` is the request's that ended
the flow (None when reconciliation or a webhook did).
"""

from __future__ import annotations

from typing import assert_never

from azora_payments import errors
from azora_payments.domain import idempotency
from azora_payments.domain.flow_outcomes import (
    Charged,
    Declined,
    Outcome,
    PaymentGivenUp,
    Refunded,
    RefundRefused,
    Rejected,
    SessionCreated,
    TooMuch,
    UnderWay,
)
from azora_payments.domain.idempotency import Stored
from azora_payments.logs import request_id_var


def render(outcome: Outcome) -> Stored:
    match outcome:
        case Charged(payment=view):
            return Stored.of(201, view)
        case UnderWay(payment=view):
            return Stored.of(200, view)
        case Refunded(refund=view):
            return Stored.of(201, view)
        case SessionCreated(session=view):
            return Stored.of(201, view)
        case Declined():
            return _problem(
                errors.CardError(
                    outcome.message,
                    code=outcome.code or errors.CardError.code,
                    title=outcome.message,
                    decline_code=outcome.decline_code,
                    payment_id=outcome.payment_id,
                    retryable=False,
                )
            )
        case Rejected(field=None):
            return _problem(errors.PaymentMethodNotFound(payment_id=outcome.payment_id))
        case Rejected():
            return _problem(
                errors.ValidationFailed(
                    outcome.message,
                    errors=[{"field": str(outcome.field), "message": outcome.message}],
                    payment_id=outcome.payment_id,
                )
            )
        case PaymentGivenUp():
            return _problem(
                errors.PaymentFailed(
                    payment_id=outcome.payment_id, retryable=False, failure=outcome.failure
                )
            )
        case TooMuch(remaining=remaining):
            return _problem(
                errors.AmountExceedsRefundable(
                    f"At most {remaining} can still be refunded.",
                    errors=[{"field": "amount", "message": f"must be at most {remaining}"}],
                    payment_id=outcome.payment_id,
                )
            )
        case RefundRefused():
            return _problem(
                errors.RefundRefused(
                    code=outcome.code, payment_id=outcome.payment_id, retryable=False
                )
            )
        case _:
            assert_never(outcome)


def _problem(error: errors.AzoraError) -> Stored:
    return Stored.of(error.status, error.problem(request_id_var.get()))


def install() -> None:
    """Make `render` the renderer of every answer the idempotency layer stores."""
    idempotency.install_renderer(render)
