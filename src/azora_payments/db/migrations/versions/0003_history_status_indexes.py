"""History filtered by status: keyset indexes that lead with the status.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 03:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_payments_user_id_status_created_at_id",
        "payments",
        ["user_id", "status", "created_at", "id"],
    )
    op.create_index("ix_payments_status_created_at_id", "payments", ["status", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_payments_status_created_at_id", table_name="payments")
    op.drop_index("ix_payments_user_id_status_created_at_id", table_name="payments")
