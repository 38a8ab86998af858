"""The schema of the last release before Alembic (commit d6e1f8c), as its `create_all` made it.

Written out here, not taken from adapters/sql/tables.py, which moves on with the code.
`release_schema()` is also what `db upgrade` checks a database of that release against
when it adopts it (kaccy_bitcoin.adapters.sql.migrations._adopt).

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def release_schema() -> sa.MetaData:
    m = sa.MetaData()
    sa.Table(
        "kaccy_orders", m,
        sa.Column("order_id", sa.String(128), primary_key=True),
        sa.Column("address", sa.String(100), nullable=False),
        sa.Column("amount_sat", sa.BigInteger(), nullable=False),
        sa.Column("tolerance_sat", sa.BigInteger(), nullable=False),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("derivation_index", sa.Integer(), nullable=True),
        sa.Index("ix_kaccy_orders_address", "address", unique=True),
        sa.Index("ix_kaccy_orders_expires_at", "expires_at"),
    )
    sa.Table(
        "kaccy_payments", m,
        sa.Column("order_id", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("reported_match", sa.JSON(), nullable=True),
        sa.Column("finality_alerted", sa.Boolean(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"),
        sa.Index("ix_kaccy_payments_state", "state"),
    )
    sa.Table(
        "kaccy_received_outputs", m,
        sa.Column("txid", sa.String(64), primary_key=True),
        sa.Column("vout", sa.Integer(), primary_key=True),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("amount_sat", sa.BigInteger(), nullable=False),
        sa.Column("confirmations", sa.Integer(), nullable=False),
        _ts("first_seen"),
        sa.Column("block_hash", sa.String(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("replaced_by", sa.String(), nullable=True),
        sa.Index("ix_kaccy_received_outputs_order_id", "order_id"),
    )
    sa.Table(
        "kaccy_withdrawals", m,
        sa.Column("withdrawal_id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        _ts("created_at"),
        sa.Column("psbt", sa.String(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Index("ix_kaccy_withdrawals_state", "state"),
    )
    sa.Table(
        "kaccy_addresses", m,
        sa.Column("address", sa.String(100), primary_key=True),
        sa.Column("chain", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("order_id", sa.String(128), nullable=True),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("chain", "index", name="uq_kaccy_addresses_chain_index"),
        sa.Index("ix_kaccy_addresses_chain_used", "chain", "used"),
    )
    sa.Table(
        "kaccy_address_counters", m,
        # A lone integer primary key: SERIAL on PostgreSQL, as the release created it.
        sa.Column("chain", sa.Integer(), primary_key=True),
        sa.Column("next_index", sa.Integer(), nullable=False),
    )
    sa.Table(
        "kaccy_cursors", m,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("block_hash", sa.String(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=True),
    )
    sa.Table(
        "kaccy_audit_log", m,
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        _ts("at"),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Index("ix_kaccy_audit_log_event_id", "event_id", unique=True),
        sa.Index("ix_kaccy_audit_log_kind", "kind"),
        sa.Index("ix_kaccy_audit_log_subject", "subject"),
    )
    sa.Table(
        "kaccy_coin_reservations", m,
        sa.Column("txid", sa.String(64), primary_key=True),
        sa.Column("vout", sa.Integer(), primary_key=True),
        sa.Column("withdrawal_id", sa.String(64), nullable=False),
        _ts("reserved_at"),
        sa.Index("ix_kaccy_coin_reservations_withdrawal_id", "withdrawal_id"),
    )
    return m


def upgrade() -> None:
    release_schema().create_all(op.get_bind())


def downgrade() -> None:
    release_schema().drop_all(op.get_bind())
