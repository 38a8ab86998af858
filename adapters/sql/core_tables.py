"""The kaccy_ tables as SQLAlchemy Core tables, for the repositories (adapters/sql/storage.py).

GENERATED from adapters/sql/tables.py by scripts/render_core_tables.py (`make tables`); do not
edit. Importing this loads SQLAlchemy Core only: no ORM, SQLModel or pydantic.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    JSON,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    false,
)

metadata = MetaData()


address_counters = Table(
    'kaccy_address_counters', metadata,
    Column('chain', Integer(), primary_key=True, nullable=False),
    Column('next_index', Integer(), nullable=False, default=0),
)


addresses = Table(
    'kaccy_addresses', metadata,
    Column('address', String(length=100), primary_key=True, nullable=False),
    Column('chain', Integer(), nullable=False),
    Column('index', Integer(), nullable=False),
    Column('label', String(), nullable=False, default=''),
    Column('order_id', String(length=128), nullable=True),
    Column('purpose', String(), nullable=False, default='receive'),
    Column('used', Boolean(), nullable=False, default=False),
    Index('ix_kaccy_addresses_chain_used', 'chain', 'used'),
    UniqueConstraint('chain', 'index', name='uq_kaccy_addresses_chain_index'),
)


api_keys = Table(
    'kaccy_api_keys', metadata,
    Column('key_id', String(length=40), primary_key=True, nullable=False),
    Column('key_hash', String(length=64), nullable=False),
    Column('scopes', JSON(), nullable=False),
    Column('created_at', DateTime(timezone=True), nullable=False),
    Column('revoked', Boolean(), nullable=False, default=False),
    Index('ix_kaccy_api_keys_key_hash', 'key_hash', unique=True),
)


audit_log = Table(
    'kaccy_audit_log', metadata,
    Column('seq', Integer(), primary_key=True, nullable=False),
    Column('event_id', String(length=200), nullable=False),
    Column('kind', String(length=40), nullable=False),
    Column('subject', String(length=128), nullable=False),
    Column('at', DateTime(timezone=True), nullable=False),
    Column('data', JSON(), nullable=False),
    Column('actor', String(length=128), nullable=False, default='system'),
    Column('prev_hash', String(length=64), nullable=False),
    Column('hash', String(length=64), nullable=False),
    Index('ix_kaccy_audit_log_event_id', 'event_id', unique=True),
    Index('ix_kaccy_audit_log_kind', 'kind'),
    Index('ix_kaccy_audit_log_subject', 'subject'),
)


coin_reservations = Table(
    'kaccy_coin_reservations', metadata,
    Column('txid', String(length=64), primary_key=True, nullable=False),
    Column('vout', Integer(), primary_key=True, nullable=False),
    Column('withdrawal_id', String(length=64), nullable=False),
    Column('reserved_at', DateTime(timezone=True), nullable=False),
    Index('ix_kaccy_coin_reservations_withdrawal_id', 'withdrawal_id'),
)


consolidations = Table(
    'kaccy_consolidations', metadata,
    Column('wallet', String(length=64), primary_key=True, nullable=False),
    Column('state', String(length=20), nullable=False),
    Column('history', JSON(), nullable=False),
    Column('inputs', JSON(), nullable=False),
    Column('withdrawal_id', String(length=64), nullable=True),
    Column('updated_at', DateTime(timezone=True), nullable=False),
    Column('version', BigInteger(), nullable=False, server_default='1'),
    Index('ix_kaccy_consolidations_state', 'state'),
)


cursors = Table(
    'kaccy_cursors', metadata,
    Column('name', String(length=64), primary_key=True, nullable=False),
    Column('block_hash', String(), nullable=False),
    Column('height', Integer(), nullable=True),
)


event_consumers = Table(
    'kaccy_event_consumers', metadata,
    Column('name', String(length=64), primary_key=True, nullable=False),
    Column('after_seq', BigInteger(), nullable=False),
    Column('updated_at', DateTime(timezone=True), nullable=False),
)


idempotency_keys = Table(
    'kaccy_idempotency_keys', metadata,
    Column('key_id', String(length=40), primary_key=True, nullable=False),
    Column('idem_key', String(length=200), primary_key=True, nullable=False),
    Column('request_hash', String(length=64), nullable=False),
    Column('status', Integer(), nullable=True),
    Column('response', JSON(), nullable=True),
    Column('created_at', DateTime(timezone=True), nullable=False),
)


limit_usage = Table(
    'kaccy_limit_usage', metadata,
    Column('withdrawal_id', String(length=64), primary_key=True, nullable=False),
    Column('user_id', String(length=128), nullable=True),
    Column('amount_sat', BigInteger(), nullable=False),
    Column('at', DateTime(timezone=True), nullable=False),
    Column('returned', Boolean(), nullable=False, default=False),
    Column('destinations', JSON(), nullable=False),
    Index('ix_kaccy_limit_usage_at', 'at'),
    Index('ix_kaccy_limit_usage_user_at', 'user_id', 'at'),
)


limits = Table(
    'kaccy_limits', metadata,
    Column('scope', String(length=128), primary_key=True, nullable=False),
    Column('daily_sat', BigInteger(), nullable=True),
    Column('monthly_sat', BigInteger(), nullable=True),
    Column('single_max_sat', BigInteger(), nullable=True),
    Column('hourly_sat', BigInteger(), nullable=True),
    Column('updated_at', DateTime(timezone=True), nullable=False),
)


ln_invoices = Table(
    'kaccy_ln_invoices', metadata,
    Column('payment_hash', String(length=64), primary_key=True, nullable=False),
    Column('order_id', String(length=128), nullable=False),
    Column('payment_request', String(), nullable=False),
    Column('amount_msat', BigInteger(), nullable=False),
    Column('created_at', DateTime(timezone=True), nullable=False),
    Column('expiry_seconds', BigInteger(), nullable=False),
    Column('state', String(length=20), nullable=False),
    Column('history', JSON(), nullable=False),
    Column('cancel_reason', String(length=20), nullable=True),
    Column('amount_paid_msat', BigInteger(), nullable=False),
    Column('settled_at', DateTime(timezone=True), nullable=True),
    Column('add_index', BigInteger(), nullable=False),
    Column('settle_index', BigInteger(), nullable=False),
    Column('version', BigInteger(), nullable=False),
    Index('ix_kaccy_ln_invoices_order_id', 'order_id'),
    Index('ix_kaccy_ln_invoices_state', 'state'),
)


ln_payouts = Table(
    'kaccy_ln_payouts', metadata,
    Column('payment_id', String(length=64), primary_key=True, nullable=False),
    Column('payment_hash', String(length=64), nullable=False),
    Column('payment_request', String(length=4000), nullable=False),
    Column('destination', String(length=66), nullable=False),
    Column('amount_msat', BigInteger(), nullable=False),
    Column('max_fee_msat', BigInteger(), nullable=False),
    Column('fee_msat', BigInteger(), nullable=True),
    Column('state', String(length=20), nullable=False),
    Column('history', JSON(), nullable=False),
    Column('user_id', String(length=128), nullable=True),
    Column('risk', JSON(), nullable=False),
    Column('approved_by', String(length=128), nullable=True),
    Column('failure_reason', String(length=200), nullable=True),
    Column('created_at', DateTime(timezone=True), nullable=False),
    Column('version', BigInteger(), nullable=False, server_default='1'),
    Index('ix_kaccy_ln_payouts_payment_hash', 'payment_hash'),
    Index('ix_kaccy_ln_payouts_state', 'state'),
)


metric_counters = Table(
    'kaccy_metric_counters', metadata,
    Column('name', String(length=64), primary_key=True, nullable=False),
    Column('value', BigInteger(), nullable=False),
)


orders = Table(
    'kaccy_orders', metadata,
    Column('order_id', String(length=128), primary_key=True, nullable=False),
    Column('address', String(length=100), nullable=False),
    Column('amount_sat', BigInteger(), nullable=False),
    Column('tolerance_sat', BigInteger(), nullable=False),
    Column('created_at', DateTime(timezone=True), nullable=False),
    Column('expires_at', DateTime(timezone=True), nullable=True),
    Column('label', String(), nullable=False, default=''),
    Column('derivation_index', Integer(), nullable=True),
    Index('ix_kaccy_orders_address', 'address', unique=True),
    Index('ix_kaccy_orders_expires_at', 'expires_at'),
)


payments = Table(
    'kaccy_payments', metadata,
    Column('order_id', String(length=128), primary_key=True, nullable=False),
    Column('state', String(length=20), nullable=False),
    Column('history', JSON(), nullable=False),
    Column('event_seq', Integer(), nullable=False, default=0),
    Column('reported_match', JSON(), nullable=True),
    Column('finality_alerted', Boolean(), nullable=False, default=False),
    Column('paid_reported', Boolean(), nullable=False, server_default=false()),
    Column('version', BigInteger(), nullable=False, server_default='1'),
    Column('lightning', JSON(), nullable=True),
    Column('zeroconf', JSON(), nullable=True),
    Index('ix_kaccy_payments_state', 'state'),
)


received_outputs = Table(
    'kaccy_received_outputs', metadata,
    Column('txid', String(length=64), primary_key=True, nullable=False),
    Column('vout', Integer(), primary_key=True, nullable=False),
    Column('order_id', String(length=128), nullable=False),
    Column('amount_sat', BigInteger(), nullable=False),
    Column('confirmations', Integer(), nullable=False),
    Column('first_seen', DateTime(timezone=True), nullable=False),
    Column('block_hash', String(), nullable=True),
    Column('status', String(length=20), nullable=False),
    Column('replaced_by', String(), nullable=True),
    Column('zeroconf_risk', JSON(), nullable=True),
    Index('ix_kaccy_received_outputs_order_id', 'order_id'),
)


sequences = Table(
    'kaccy_sequences', metadata,
    Column('name', String(length=64), primary_key=True, nullable=False),
    Column('value', BigInteger(), nullable=False),
)


swaps = Table(
    'kaccy_swaps', metadata,
    Column('swap_id', String(length=64), primary_key=True, nullable=False),
    Column('role', String(length=16), nullable=False),
    Column('state', String(length=20), nullable=False),
    Column('key_index', BigInteger(), nullable=False),
    Column('watching', Boolean(), nullable=False),
    Column('history', JSON(), nullable=False),
    Column('data', JSON(), nullable=False),
    Column('created_at', DateTime(timezone=True), nullable=False),
    Column('updated_at', DateTime(timezone=True), nullable=False),
    Column('version', BigInteger(), nullable=False, server_default='1'),
    Index('ix_kaccy_swaps_state', 'state'),
    Index('ix_kaccy_swaps_watching', 'watching'),
    UniqueConstraint('key_index', name=None),
)


wallets = Table(
    'kaccy_wallets', metadata,
    Column('name', String(length=32), primary_key=True, nullable=False),
    Column('number', Integer(), nullable=False),
    Column('threshold', Integer(), nullable=False),
    Column('keys', JSON(), nullable=False),
    Column('definition', String(length=64), nullable=False),
    Column('created_at', DateTime(timezone=True), nullable=False),
    UniqueConstraint('definition', name='uq_kaccy_wallets_definition'),
    UniqueConstraint('number', name='uq_kaccy_wallets_number'),
)


webhooks = Table(
    'kaccy_webhooks', metadata,
    Column('webhook_id', String(length=40), primary_key=True, nullable=False),
    Column('url', String(length=2000), nullable=False),
    Column('secret', String(length=100), nullable=False),
    Column('events', JSON(), nullable=True),
    Column('key_id', String(length=40), nullable=False),
    Column('created_at', DateTime(timezone=True), nullable=False),
    Column('delivered_seq', BigInteger(), nullable=False),
    Column('attempts', Integer(), nullable=False, default=0),
    Column('next_attempt_at', DateTime(timezone=True), nullable=True),
    Column('last_error', String(length=500), nullable=True),
    Column('active', Boolean(), nullable=False, default=True),
    Index('ix_kaccy_webhooks_active', 'active'),
)


withdrawals = Table(
    'kaccy_withdrawals', metadata,
    Column('withdrawal_id', String(length=64), primary_key=True, nullable=False),
    Column('state', String(length=20), nullable=False),
    Column('created_at', DateTime(timezone=True), nullable=False),
    Column('psbt', String(), nullable=False),
    Column('data', JSON(), nullable=False),
    Column('txid', String(length=64), nullable=True),
    Column('settled', Boolean(), nullable=False, default=False),
    Column('version', BigInteger(), nullable=False, server_default='1'),
    Index('ix_kaccy_withdrawals_settled', 'settled'),
    Index('ix_kaccy_withdrawals_state', 'state'),
    Index('ix_kaccy_withdrawals_txid', 'txid'),
)
