"""Zero-conf: the risk each payment had when first seen unconfirmed, and an order's acceptance
before it confirmed (with any double spend of what it was accepted on).

Existing rows: outputs were never scored and no order was accepted early (both NULL).

Revision ID: 0011
Revises: 0010
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("kaccy_received_outputs", sa.Column("zeroconf_risk", sa.JSON(), nullable=True))
    op.add_column("kaccy_payments", sa.Column("zeroconf", sa.JSON(), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+), not a batch copy: a copied table would lose the metric
    # counters' triggers (0009) on both tables.
    op.drop_column("kaccy_payments", "zeroconf")
    op.drop_column("kaccy_received_outputs", "zeroconf_risk")
