"""Receipt versions: every stored rendering of a receipt (issued, then after each refund).

Revision ID: 0005_receipt_versions
Revises: 0004
Create Date: 2026-12-01 10:15:00

A receipt stored before this (its `pdf_key`) becomes its version 1; its content hash is
unknown (""), so the next request or refund renders a version 2 of what it shows now.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_receipt_versions"
down_revision: str | None = "0005_idempotency_work_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "receipt_versions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("receipt_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["receipt_id"],
            ["receipts.id"],
            name=op.f("fk_receipt_versions_receipt_id_receipts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipt_versions")),
        sa.UniqueConstraint(
            "receipt_id", "version", name=op.f("uq_receipt_versions_receipt_id_version")
        ),
    )
    op.execute(
        "INSERT INTO receipt_versions"
        " (receipt_id, version, storage_key, content_hash, sha256, size, reason, created_at)"
        " SELECT id, 1, pdf_key, '', '', 0, 'issued', issued_at FROM receipts"
        " WHERE pdf_key IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("receipt_versions")
