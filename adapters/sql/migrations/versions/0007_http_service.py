"""The HTTP service's records: API keys (hashed), idempotency keys, webhook subscriptions with
their delivery cursor in the outbox. New tables only.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kaccy_api_keys",
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_kaccy_api_keys_key_hash", "kaccy_api_keys", ["key_hash"], unique=True)
    op.create_table(
        "kaccy_idempotency_keys",
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("idem_key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "kaccy_webhooks",
        sa.Column("webhook_id", sa.String(40), primary_key=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("events", sa.JSON(), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_kaccy_webhooks_active", "kaccy_webhooks", ["active"])


def downgrade() -> None:
    op.drop_table("kaccy_webhooks")
    op.drop_table("kaccy_idempotency_keys")
    op.drop_index("ix_kaccy_api_keys_key_hash", table_name="kaccy_api_keys")
    op.drop_table("kaccy_api_keys")
