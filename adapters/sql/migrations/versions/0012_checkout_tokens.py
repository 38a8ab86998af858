"""Checkout pages: every order's unguessable checkout token (`GET /pay/{token}`).

Orders made before this revision are given a token here, so each order has a page.

Revision ID: 0012
Revises: 0011
"""
from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kaccy_orders") as batch:
        batch.add_column(sa.Column("checkout_token", sa.String(64), nullable=True))
    orders = sa.table("kaccy_orders", sa.column("order_id", sa.String), sa.column("checkout_token", sa.String))
    bind = op.get_bind()
    ids = [row[0] for row in bind.execute(sa.select(orders.c.order_id))]
    for order_id in ids:
        bind.execute(orders.update().where(orders.c.order_id == order_id)
                     .values(checkout_token=secrets.token_urlsafe(24)))
    op.create_index("ix_kaccy_orders_checkout_token", "kaccy_orders", ["checkout_token"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_kaccy_orders_checkout_token", table_name="kaccy_orders")
    with op.batch_alter_table("kaccy_orders") as batch:
        batch.drop_column("checkout_token")
