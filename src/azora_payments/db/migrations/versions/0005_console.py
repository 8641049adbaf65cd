"""The operator console: sessions, one-time sign-in links, refund approvals, and the indexes of
its disputes and undelivered-notification lists.

Revision ID: 0005_console
Revises: 0004
Create Date: 2026-12-01 10:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_console"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("operator_id", sa.String(255), nullable=False),
        sa.Column("operator_email", sa.String(320), nullable=True),
        sa.Column("operator_name", sa.String(255), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_console_sessions")),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_table(
        "console_sign_in_links",
        sa.Column("nonce_hash", sa.String(64), nullable=False),
        sa.Column("operator_id", sa.String(255), nullable=False),
        sa.Column("operator_email", sa.String(320), nullable=True),
        sa.Column("operator_name", sa.String(255), nullable=True),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("nonce_hash", name=op.f("pk_console_sign_in_links")),
    )
    op.create_table(
        "refund_approvals",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("request_key", sa.String(64), nullable=False),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("refund_id", sa.String(40), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("decided_at", UTC_TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_refund_approvals_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund_approvals")),
        sa.UniqueConstraint("request_key", name=op.f("uq_refund_approvals_request_key")),
    )
    op.create_index(
        "ix_refund_approvals_payment_id_created_at",
        "refund_approvals",
        ["payment_id", "created_at"],
    )
    op.create_index(
        "ix_refund_approvals_status_created_at", "refund_approvals", ["status", "created_at"]
    )
    op.create_index("ix_refunds_created_at", "refunds", ["created_at"])
    op.create_index(
        "ix_payments_disputed_updated_at_id", "payments", ["disputed", "updated_at", "id"]
    )
    op.create_index(
        "ix_notifications_delivered_at_created_at_id",
        "notifications",
        ["delivered_at", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_delivered_at_created_at_id", table_name="notifications")
    op.drop_index("ix_payments_disputed_updated_at_id", table_name="payments")
    op.drop_index("ix_refunds_created_at", table_name="refunds")
    op.drop_index("ix_refund_approvals_status_created_at", table_name="refund_approvals")
    op.drop_index("ix_refund_approvals_payment_id_created_at", table_name="refund_approvals")
    op.drop_table("refund_approvals")
    op.drop_table("console_sign_in_links")
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_table("console_sessions")
