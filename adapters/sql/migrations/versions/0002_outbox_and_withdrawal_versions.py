"""The event outbox (named sequences, consumers' acknowledgements); on payments whether
order_paid was emitted; on withdrawals an optimistic-concurrency version, the txid as a
column (it was only inside `data`) and whether the chain's verdict on them is settled.

Existing rows: a payment whose confirmed outputs already cover its order counts as having
reported order_paid (the release told its consumers through payment_confirmed, so the new
event is not sent late for it); every withdrawal gets version 1 and its txid from `data`; one
rejected before it was ever signed is settled (no transaction of its own can exist), any other
is not, so the monitor looks at it once more and settles it from what the chain says.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_sequences",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "kaccy_event_consumers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("after_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("kaccy_payments",
                  sa.Column("paid_reported", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("kaccy_withdrawals") as table:
        table.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"))
        table.add_column(sa.Column("txid", sa.String(64), nullable=True))
        # The default fills the rows already there; the code always writes the column.
        table.add_column(sa.Column("settled", sa.Boolean(), nullable=False, server_default=sa.false()))
    withdrawals = sa.table("kaccy_withdrawals", sa.column("txid", sa.String()), sa.column("data", sa.JSON()))
    op.execute(withdrawals.update().values(txid=withdrawals.c.data["txid"].as_string()))
    _already_paid()
    _never_signed_rejections_settled()
    with op.batch_alter_table("kaccy_withdrawals") as table:
        table.alter_column("settled", server_default=None)
        table.create_index("ix_kaccy_withdrawals_txid", ["txid"])
        table.create_index("ix_kaccy_withdrawals_settled", ["settled"])


def _already_paid() -> None:
    orders = sa.table("kaccy_orders", sa.column("order_id"), sa.column("amount_sat"), sa.column("tolerance_sat"))
    outputs = sa.table("kaccy_received_outputs", sa.column("order_id"), sa.column("amount_sat"),
                       sa.column("confirmations"), sa.column("status"))
    payments = sa.table("kaccy_payments", sa.column("order_id"), sa.column("paid_reported"))
    covered = (sa.select(orders.c.order_id)
               .join(outputs, outputs.c.order_id == orders.c.order_id)
               .where(outputs.c.status == "active", outputs.c.confirmations >= 1)
               .group_by(orders.c.order_id, orders.c.amount_sat, orders.c.tolerance_sat)
               .having(sa.func.sum(outputs.c.amount_sat) >= orders.c.amount_sat - orders.c.tolerance_sat))
    op.execute(payments.update().where(payments.c.order_id.in_(covered)).values(paid_reported=True))


def _never_signed_rejections_settled() -> None:
    withdrawals = sa.table("kaccy_withdrawals", sa.column("withdrawal_id", sa.String()),
                           sa.column("state", sa.String()), sa.column("data", sa.JSON()),
                           sa.column("settled", sa.Boolean()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(withdrawals.c.withdrawal_id, withdrawals.c.data)
                        .where(withdrawals.c.state == "REJECTED")).all()
    for withdrawal_id, data in rows:
        if not any(t.get("dest") == "SIGNED" for t in data.get("history", ())):
            bind.execute(withdrawals.update().where(withdrawals.c.withdrawal_id == withdrawal_id)
                         .values(settled=True))


def downgrade() -> None:
    """The schema of 0001 again; each txid goes back into `data`, where 0001's code reads it
    (a release of then does not know the states added since: this is for development)."""
    withdrawals = sa.table("kaccy_withdrawals", sa.column("withdrawal_id", sa.String()),
                           sa.column("txid", sa.String()), sa.column("data", sa.JSON()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(withdrawals).where(withdrawals.c.txid.is_not(None))).all()
    for withdrawal_id, txid, data in rows:
        bind.execute(withdrawals.update().where(withdrawals.c.withdrawal_id == withdrawal_id)
                     .values(data={**data, "txid": txid}))
    with op.batch_alter_table("kaccy_withdrawals") as table:
        table.drop_index("ix_kaccy_withdrawals_settled")
        table.drop_index("ix_kaccy_withdrawals_txid")
        table.drop_column("settled")
        table.drop_column("txid")
        table.drop_column("version")
    with op.batch_alter_table("kaccy_payments") as table:
        table.drop_column("paid_reported")
    op.drop_table("kaccy_event_consumers")
    op.drop_table("kaccy_sequences")
