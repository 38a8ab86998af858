"""Each wallet's UTXO consolidation machine (`kaccy-bitcoin consolidate`).

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_consolidations",
        sa.Column("wallet", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("withdrawal_id", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"),
    )
    op.create_index("ix_kaccy_consolidations_state", "kaccy_consolidations", ["state"])


def downgrade() -> None:
    op.drop_index("ix_kaccy_consolidations_state", table_name="kaccy_consolidations")
    op.drop_table("kaccy_consolidations")
