"""Customers: the number of the last change of the default card (its Stripe idempotency key).

Revision ID: 0006_default_card_version
Revises: 0005_card_declines
Create Date: 2026-12-01 10:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_default_card_version"
down_revision: str | None = "0005_card_declines"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("default_method_version", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("default_method_version")
