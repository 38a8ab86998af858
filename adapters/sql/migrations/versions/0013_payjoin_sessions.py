"""PayJoin receiving sessions (`kaccy_payjoins`) and the inputs originals offered (`kaccy_payjoin_inputs`).

Revision ID: 0013
Revises: 0012
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_payjoins",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.Column("proposal_txid", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"),
        sa.UniqueConstraint("order_id"),
    )
    op.create_index("ix_kaccy_payjoins_state", "kaccy_payjoins", ["state"])
    op.create_index("ix_kaccy_payjoins_released", "kaccy_payjoins", ["released"])
    op.create_index("ix_kaccy_payjoins_proposal_txid", "kaccy_payjoins", ["proposal_txid"])
    op.create_table(
        "kaccy_payjoin_inputs",
        sa.Column("txid", sa.String(64), primary_key=True),
        sa.Column("vout", sa.Integer(), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kaccy_payjoin_inputs")
    op.drop_index("ix_kaccy_payjoins_proposal_txid", table_name="kaccy_payjoins")
    op.drop_index("ix_kaccy_payjoins_released", table_name="kaccy_payjoins")
    op.drop_index("ix_kaccy_payjoins_state", table_name="kaccy_payjoins")
    op.drop_table("kaccy_payjoins")
