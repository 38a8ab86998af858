"""Atomic swaps (`kaccy-bitcoin swap`).

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_swaps",
        sa.Column("swap_id", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("key_index", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("watching", sa.Boolean(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"),
    )
    op.create_index("ix_kaccy_swaps_state", "kaccy_swaps", ["state"])
    op.create_index("ix_kaccy_swaps_watching", "kaccy_swaps", ["watching"])


def downgrade() -> None:
    op.drop_index("ix_kaccy_swaps_watching", table_name="kaccy_swaps")
    op.drop_index("ix_kaccy_swaps_state", table_name="kaccy_swaps")
    op.drop_table("kaccy_swaps")
