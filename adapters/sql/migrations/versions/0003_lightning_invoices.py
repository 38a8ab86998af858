"""Lightning invoices issued for orders, and on payments the settled invoices they count.

Existing rows: no invoice exists yet, and every payment counts none (`lightning` NULL).

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_ln_invoices",
        sa.Column("payment_hash", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("payment_request", sa.String(), nullable=False),
        sa.Column("amount_msat", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expiry_seconds", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("cancel_reason", sa.String(20), nullable=True),
        sa.Column("amount_paid_msat", sa.BigInteger(), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("add_index", sa.BigInteger(), nullable=False),
        sa.Column("settle_index", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_kaccy_ln_invoices_order_id", "kaccy_ln_invoices", ["order_id"])
    op.create_index("ix_kaccy_ln_invoices_state", "kaccy_ln_invoices", ["state"])
    op.add_column("kaccy_payments", sa.Column("lightning", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kaccy_payments") as table:
        table.drop_column("lightning")
    op.drop_index("ix_kaccy_ln_invoices_state", "kaccy_ln_invoices")
    op.drop_index("ix_kaccy_ln_invoices_order_id", "kaccy_ln_invoices")
    op.drop_table("kaccy_ln_invoices")
