"""Every module that registers job kinds: the worker imports this one to know them all."""

from __future__ import annotations

from azora_payments.jobs import (
    checkout,
    cleanup,
    declines,
    events,
    idempotency,
    intents,
    notifications,
    receipts,
    refunds,
)

# Add a line per handler module (receipts, mail, notifications, webhook events, reconciliation).
MODULES = (
    cleanup,
    declines,
    idempotency,
    events,
    intents,
    notifications,
    receipts,
    refunds,
    checkout,
)
