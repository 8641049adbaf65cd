"""Idempotency keys found by the payment or refund they made (reconciliation takes them).

Revision ID: 0005_idempotency_work_index
Revises: 0004
Create Date: 2026-12-01 10:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_idempotency_work_index"
down_revision: str | None = "0006_default_card_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_idempotency_keys_payment_id", "idempotency_keys", ["payment_id"])
    op.create_index("ix_idempotency_keys_refund_id", "idempotency_keys", ["refund_id"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_refund_id", table_name="idempotency_keys")
    op.drop_index("ix_idempotency_keys_payment_id", table_name="idempotency_keys")
