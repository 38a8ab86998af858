"""Controls: withdrawal limits (per user and platform) and what each withdrawal takes from
them; the audit log becomes a hash chain (who did it, and each entry's link to the one before).

Existing rows: every audit entry gets the actor `system` and is chained in `seq` order
(domain/audit.py), so `audit verify` holds on an upgraded database from its first entry;
the sequence counter of the outbox is created when missing, at the highest seq, so a later
removal of the last entries is seen too. Withdrawals made before limits existed take nothing
from them.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from kaccy_bitcoin.domain.audit import GENESIS, SYSTEM, entry_hash

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_limits",
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("daily_sat", sa.BigInteger(), nullable=True),
        sa.Column("monthly_sat", sa.BigInteger(), nullable=True),
        sa.Column("single_max_sat", sa.BigInteger(), nullable=True),
        sa.Column("hourly_sat", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "kaccy_limit_usage",
        sa.Column("withdrawal_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("amount_sat", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("returned", sa.Boolean(), nullable=False),
        sa.Column("destinations", sa.JSON(), nullable=False),
    )
    op.create_index("ix_kaccy_limit_usage_at", "kaccy_limit_usage", ["at"])
    op.create_index("ix_kaccy_limit_usage_user_at", "kaccy_limit_usage", ["user_id", "at"])
    with op.batch_alter_table("kaccy_audit_log") as table:
        table.add_column(sa.Column("actor", sa.String(128), nullable=False, server_default=SYSTEM))
        table.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        table.add_column(sa.Column("hash", sa.String(64), nullable=True))
    _chain_existing_entries()
    with op.batch_alter_table("kaccy_audit_log") as table:
        table.alter_column("actor", server_default=None, existing_type=sa.String(128), existing_nullable=False)
        table.alter_column("prev_hash", nullable=False, existing_type=sa.String(64))
        table.alter_column("hash", nullable=False, existing_type=sa.String(64))


def _chain_existing_entries() -> None:
    log = sa.table("kaccy_audit_log", sa.column("seq", sa.Integer()), sa.column("event_id", sa.String()),
                   sa.column("kind", sa.String()), sa.column("subject", sa.String()),
                   sa.column("at", sa.DateTime(timezone=True)), sa.column("data", sa.JSON()),
                   sa.column("actor", sa.String()), sa.column("prev_hash", sa.String()),
                   sa.column("hash", sa.String()))
    sequences = sa.table("kaccy_sequences", sa.column("name", sa.String()), sa.column("value", sa.BigInteger()))
    bind = op.get_bind()
    prev, highest = GENESIS, 0
    rows = bind.execute(sa.select(log.c.seq, log.c.event_id, log.c.kind, log.c.subject, log.c.at, log.c.data)
                        .order_by(log.c.seq)).all()
    for seq, event_id, kind, subject, at, data in rows:
        digest = entry_hash(prev, seq, event_id, kind, subject, SYSTEM, at, data)
        bind.execute(log.update().where(log.c.seq == seq).values(prev_hash=prev, hash=digest))
        prev, highest = digest, seq
    if bind.execute(sa.select(sequences.c.value).where(sequences.c.name == "events")).first() is None:
        bind.execute(sequences.insert().values(name="events", value=highest))


def downgrade() -> None:
    with op.batch_alter_table("kaccy_audit_log") as table:
        table.drop_column("hash")
        table.drop_column("prev_hash")
        table.drop_column("actor")
    op.drop_index("ix_kaccy_limit_usage_user_at", table_name="kaccy_limit_usage")
    op.drop_index("ix_kaccy_limit_usage_at", table_name="kaccy_limit_usage")
    op.drop_table("kaccy_limit_usage")
    op.drop_table("kaccy_limits")
