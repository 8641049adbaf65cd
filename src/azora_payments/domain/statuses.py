"""The statuses our rows store, one `StrEnum` per state machine.

They live together here, importing nothing, because the repositories query by them and the
domain modules that own the rules (`payments`, `refunds`, `events`) import the repositories:
a home in those modules would make an import cycle. The members are the strings stored in the
columns and shown in the JSON (a `StrEnum` member equals and serialises as its value), so the
database and every answer stay as they were.
"""

from __future__ import annotations

from enum import StrEnum


class PaymentStatus(StrEnum):
    """A payment's status; the rules that move it are in `domain.payments`."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# Payments Stripe may still move on its own (reconciliation looks at those left too long).
UNSETTLED_PAYMENTS = (
    PaymentStatus.REQUIRES_PAYMENT_METHOD,
    PaymentStatus.REQUIRES_ACTION,
    PaymentStatus.PROCESSING,
)


class RefundStatus(StrEnum):
    """A refund's status, as Stripe names it; the rules are in `domain.refunds`."""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class EventStatus(StrEnum):
    """A recorded Stripe event's status (`domain.events`)."""

    RECEIVED = "received"
    APPLIED = "applied"
    IGNORED = "ignored"
    PARKED = "parked"


class JobStatus(StrEnum):
    """A queued job's status (`jobs`, `db.repositories.jobs`)."""

    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"
