"""Card-testing defence: the declines the limits count, Stripe's real decline reason beside the
one told to the customer, and the card fingerprint and client address a decline counts against.

Revision ID: 0005_card_declines
Revises: 0004
Create Date: 2026-12-01 10:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_card_declines"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# A copy, as it was when this ran (a migration must not change with the code).
MASKED_DECLINE_CODES = (
    "fraudulent",
    "lost_card",
    "merchant_blacklist",
    "pickup_card",
    "restricted_card",
    "security_violation",
    "stolen_card",
    "invalid_account",
    "new_account_information_available",
    "revocation_of_all_authorizations",
    "revocation_of_authorization",
    "stop_payment_order",
)


def upgrade() -> None:
    op.create_table(
        "card_declines",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("card_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("stripe_decline_code", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_declines")),
        sa.UniqueConstraint("source", name=op.f("uq_card_declines_source")),
    )
    op.create_index("ix_card_declines_user_id_at", "card_declines", ["user_id", "at"])
    op.create_index(
        "ix_card_declines_card_fingerprint_at", "card_declines", ["card_fingerprint", "at"]
    )
    op.create_index("ix_card_declines_client_ip_at", "card_declines", ["client_ip", "at"])
    op.create_index("ix_card_declines_at", "card_declines", ["at"])
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_decline_code", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("card_fingerprint", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("client_ip", sa.String(length=64), nullable=True))
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.add_column(sa.Column("card_fingerprint", sa.String(length=64), nullable=True))
    # Failures recorded before: Stripe's reason moves beside the one told, and the reasons that
    # would help a card tester are told as generic_decline from now on (as domain.declines).
    payments = sa.table(
        "payments",
        sa.column("failure_code", sa.String),
        sa.column("failure_decline_code", sa.String),
        sa.column("failure_message", sa.String),
        sa.column("stripe_decline_code", sa.String),
    )
    op.execute(payments.update().values(stripe_decline_code=payments.c.failure_decline_code))
    op.execute(
        payments.update()
        .where(payments.c.failure_decline_code.in_(MASKED_DECLINE_CODES))
        .values(
            failure_code="card_declined",
            failure_decline_code="generic_decline",
            failure_message="Your card was declined.",
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.drop_column("card_fingerprint")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("client_ip")
        batch_op.drop_column("card_fingerprint")
        batch_op.drop_column("stripe_decline_code")
    op.drop_index("ix_card_declines_at", table_name="card_declines")
    op.drop_index("ix_card_declines_client_ip_at", table_name="card_declines")
    op.drop_index("ix_card_declines_card_fingerprint_at", table_name="card_declines")
    op.drop_index("ix_card_declines_user_id_at", table_name="card_declines")
    op.drop_table("card_declines")
