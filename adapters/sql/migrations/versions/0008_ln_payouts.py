"""Payouts over Lightning, held to the controls of withdrawals (limits, risk review, audit).
A new table only.

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_ln_payouts",
        sa.Column("payment_id", sa.String(64), primary_key=True),
        sa.Column("payment_hash", sa.String(64), nullable=False),
        sa.Column("payment_request", sa.String(4000), nullable=False),
        sa.Column("destination", sa.String(66), nullable=False),
        sa.Column("amount_msat", sa.BigInteger(), nullable=False),
        sa.Column("max_fee_msat", sa.BigInteger(), nullable=False),
        sa.Column("fee_msat", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("risk", sa.JSON(), nullable=False),
        sa.Column("approved_by", sa.String(128), nullable=True),
        sa.Column("failure_reason", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"),
    )
    op.create_index("ix_kaccy_ln_payouts_payment_hash", "kaccy_ln_payouts", ["payment_hash"])
    op.create_index("ix_kaccy_ln_payouts_state", "kaccy_ln_payouts", ["state"])


def downgrade() -> None:
    op.drop_index("ix_kaccy_ln_payouts_state", table_name="kaccy_ln_payouts")
    op.drop_index("ix_kaccy_ln_payouts_payment_hash", table_name="kaccy_ln_payouts")
    op.drop_table("kaccy_ln_payouts")
