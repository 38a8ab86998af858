"""The metric counters: `kaccy_metric_counters` and the triggers that move it as payments,
withdrawals and received outputs change, set from the tables as they are when it runs.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from kaccy_bitcoin.adapters.sql import metric_counters

    op.create_table(
        "kaccy_metric_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    metric_counters.install(op.get_bind())


def downgrade() -> None:
    bind = op.get_bind()
    for table in ("kaccy_payments", "kaccy_withdrawals", "kaccy_received_outputs"):
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_count ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_count()")
        else:
            for when in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_count_{when}")
    op.drop_table("kaccy_metric_counters")
