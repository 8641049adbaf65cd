"""Every module that registers job kinds: the worker imports this one to know them all."""

from __future__ import annotations

from azora_payments.jobs import (
    checkout,
    cleanup,
    events,
    idempotency,
    notifications,
    receipts,
    refunds,
)

# Add a line per handler module (receipts, mail, notifications, webhook events, reconciliation).
MODULES = (cleanup, idempotency, events, notifications, receipts, refunds, checkout)
