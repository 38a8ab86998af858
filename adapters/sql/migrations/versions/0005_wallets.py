"""Named wallets: kaccy_wallets holds each wallet added by `wallet add` (the `default` wallet
is the one KACCY_XPUB configures and is not stored). Nothing existing changes: the default
wallet keeps its address chains 0 and 1, and a withdrawal without a wallet is the default's.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_wallets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("definition", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("number", name="uq_kaccy_wallets_number"),
        sa.UniqueConstraint("definition", name="uq_kaccy_wallets_definition"),
    )


def downgrade() -> None:
    op.drop_table("kaccy_wallets")
