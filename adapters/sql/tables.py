"""Table definitions: the one declaration of the schema. They live in their own metadata
(prefix `kaccy_`), so an embedding application's `SQLModel.metadata.create_all()` never
creates them by accident.

Alembic and the creation of a new database use this metadata; the repositories use
`core_tables.py`, generated from it (`make tables`), so that a command on an existing
database imports neither SQLModel nor pydantic nor SQLAlchemy's ORM."""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Index, UniqueConstraint, event, false
from pydantic import ConfigDict
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class KaccyTable(SQLModel, registry=registry()):
    # Rows are built and read through SQLAlchemy, never validated or serialized by pydantic
    # (SQLModel's table models skip validation), so pydantic's validator and serializer are
    # built only if something asks for one, not when each class is defined (a third of what
    # importing this module costs).
    model_config = ConfigDict(defer_build=True)


metadata = KaccyTable.metadata


def _ts(**kw: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kw))


class OrderRow(KaccyTable, table=True):
    __tablename__ = "kaccy_orders"
    order_id: str = Field(primary_key=True, max_length=128)
    address: str = Field(max_length=100, unique=True, index=True)
    amount_sat: int = Field(sa_column=Column(BigInteger, nullable=False))
    tolerance_sat: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: dt.datetime = _ts(nullable=False)
    expires_at: Optional[dt.datetime] = _ts(nullable=True, index=True)
    label: str = ""
    derivation_index: Optional[int] = None


class PaymentRow(KaccyTable, table=True):
    __tablename__ = "kaccy_payments"
    order_id: str = Field(primary_key=True, max_length=128)
    state: str = Field(index=True, max_length=20)
    history: list = Field(sa_column=Column(JSON, nullable=False))
    event_seq: int = 0
    reported_match: Optional[list] = Field(default=None, sa_column=Column(JSON, nullable=True))
    finality_alerted: bool = False
    # order_paid was emitted for this order: it never is again, whatever reorgs follow.
    paid_reported: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    # Bumped by every write of the payment or its outputs: the optimistic-concurrency check
    # of SqlPayments.save and the validity check of its in-process cache.
    version: int = Field(default=1, sa_column=Column(BigInteger, nullable=False, server_default="1"))
    # Settled Lightning invoices counted for the order: {payment hash: msat paid}.
    lightning: Optional[dict] = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Accepted before it confirmed (domain/zeroconf.py's ZeroconfAcceptance), with any double spend.
    zeroconf: Optional[dict] = Field(default=None, sa_column=Column(JSON, nullable=True))


class InvoiceRow(KaccyTable, table=True):
    """A Lightning invoice issued for an order (LND holds the same invoice; this is what we
    last learned of it)."""
    __tablename__ = "kaccy_ln_invoices"
    payment_hash: str = Field(primary_key=True, max_length=64)
    order_id: str = Field(index=True, max_length=128)
    payment_request: str
    amount_msat: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: dt.datetime = _ts(nullable=False)
    expiry_seconds: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(index=True, max_length=20)
    history: list = Field(sa_column=Column(JSON, nullable=False))
    cancel_reason: Optional[str] = Field(default=None, max_length=20)
    amount_paid_msat: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    settled_at: Optional[dt.datetime] = _ts(nullable=True)
    add_index: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    settle_index: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    version: int = Field(default=1, sa_column=Column(BigInteger, nullable=False))


class OutputRow(KaccyTable, table=True):
    __tablename__ = "kaccy_received_outputs"
    txid: str = Field(primary_key=True, max_length=64)
    vout: int = Field(primary_key=True)
    order_id: str = Field(index=True, max_length=128)
    amount_sat: int = Field(sa_column=Column(BigInteger, nullable=False))
    confirmations: int
    first_seen: dt.datetime = _ts(nullable=False)
    block_hash: Optional[str] = None
    status: str = Field(max_length=20)
    replaced_by: Optional[str] = None
    # {"score", "reasons", "details"} when first seen unconfirmed; never changed afterwards.
    zeroconf_risk: Optional[dict] = Field(default=None, sa_column=Column(JSON, nullable=True))


class WithdrawalRow(KaccyTable, table=True):
    __tablename__ = "kaccy_withdrawals"
    withdrawal_id: str = Field(primary_key=True, max_length=64)
    state: str = Field(index=True, max_length=20)
    created_at: dt.datetime = _ts(nullable=False)
    psbt: str
    data: dict = Field(sa_column=Column(JSON, nullable=False))
    txid: Optional[str] = Field(default=None, max_length=64, index=True)
    settled: bool = Field(default=False, index=True)   # the chain's verdict is final: no longer watched
    # Bumped by every write: SqlWithdrawals.save updates only `WHERE version = <as read>`,
    # so of two processes acting on one withdrawal (a cancel and a broadcast) one loses.
    version: int = Field(default=1, sa_column=Column(BigInteger, nullable=False, server_default="1"))


class AddressRow(KaccyTable, table=True):
    __tablename__ = "kaccy_addresses"
    __table_args__ = (UniqueConstraint("chain", "index", name="uq_kaccy_addresses_chain_index"),
                      Index("ix_kaccy_addresses_chain_used", "chain", "used"))
    address: str = Field(primary_key=True, max_length=100)
    chain: int
    index: int
    label: str = ""
    order_id: Optional[str] = Field(default=None, max_length=128)
    purpose: str = "receive"
    used: bool = False


class CounterRow(KaccyTable, table=True):
    __tablename__ = "kaccy_address_counters"
    chain: int = Field(primary_key=True)
    next_index: int = 0


class CursorRow(KaccyTable, table=True):
    __tablename__ = "kaccy_cursors"
    name: str = Field(primary_key=True, max_length=64)
    block_hash: str
    height: Optional[int] = None


class SequenceRow(KaccyTable, table=True):
    """Named counters handed out under a row lock (the event outbox's `seq`)."""

    __tablename__ = "kaccy_sequences"
    name: str = Field(primary_key=True, max_length=64)
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


class EventConsumerRow(KaccyTable, table=True):
    """How far a named consumer of the event outbox has acknowledged."""

    __tablename__ = "kaccy_event_consumers"
    name: str = Field(primary_key=True, max_length=64)
    after_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: dt.datetime = _ts(nullable=False)


class AuditRow(KaccyTable, table=True):
    """The audit log, which is also the event outbox: `seq` is assigned from the
    `events` sequence under its row lock, so sequence order is commit order."""

    __tablename__ = "kaccy_audit_log"
    seq: Optional[int] = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, index=True, max_length=200)
    kind: str = Field(index=True, max_length=40)
    subject: str = Field(index=True, max_length=128)
    at: dt.datetime = _ts(nullable=False)
    data: dict = Field(sa_column=Column(JSON, nullable=False))
    # The hash chain (domain/audit.py), computed as the entry is numbered, under the same lock.
    actor: str = Field(default="system", max_length=128)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class LimitsRow(KaccyTable, table=True):
    """Withdrawal limits of one scope: a user, or `platform`. Its row is also the lock that
    serializes the limit checks of one scope (SELECT ... FOR UPDATE)."""

    __tablename__ = "kaccy_limits"
    scope: str = Field(primary_key=True, max_length=128)
    daily_sat: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    monthly_sat: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    single_max_sat: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    hourly_sat: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    updated_at: dt.datetime = _ts(nullable=False)


class LimitUsageRow(KaccyTable, table=True):
    """What each withdrawal takes from the limits, from its creation until it is known to pay
    nothing (`returned`)."""

    __tablename__ = "kaccy_limit_usage"
    __table_args__ = (Index("ix_kaccy_limit_usage_user_at", "user_id", "at"),)
    withdrawal_id: str = Field(primary_key=True, max_length=64)
    user_id: Optional[str] = Field(default=None, max_length=128)
    amount_sat: int = Field(sa_column=Column(BigInteger, nullable=False))
    at: dt.datetime = _ts(nullable=False, index=True)
    returned: bool = False
    destinations: list = Field(sa_column=Column(JSON, nullable=False))


class ReservationRow(KaccyTable, table=True):
    __tablename__ = "kaccy_coin_reservations"
    txid: str = Field(primary_key=True, max_length=64)
    vout: int = Field(primary_key=True)
    withdrawal_id: str = Field(index=True, max_length=64)
    reserved_at: dt.datetime = _ts(nullable=False)


class ApiKeyRow(KaccyTable, table=True):
    """An HTTP API key: only the SHA-256 of its secret is stored."""

    __tablename__ = "kaccy_api_keys"
    key_id: str = Field(primary_key=True, max_length=40)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    scopes: list = Field(sa_column=Column(JSON, nullable=False))
    created_at: dt.datetime = _ts(nullable=False)
    revoked: bool = False


class IdempotencyRow(KaccyTable, table=True):
    """An Idempotency-Key of one API key: the request it was first used for and its answer."""

    __tablename__ = "kaccy_idempotency_keys"
    key_id: str = Field(primary_key=True, max_length=40)
    idem_key: str = Field(primary_key=True, max_length=200)
    request_hash: str = Field(max_length=64)
    status: Optional[int] = None
    response: Optional[dict] = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: dt.datetime = _ts(nullable=False)


class WebhookRow(KaccyTable, table=True):
    """A webhook subscription and its delivery cursor in the outbox (see domain.api_access.Webhook)."""

    __tablename__ = "kaccy_webhooks"
    webhook_id: str = Field(primary_key=True, max_length=40)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=100)
    events: Optional[list] = Field(default=None, sa_column=Column(JSON, nullable=True))
    key_id: str = Field(max_length=40)
    created_at: dt.datetime = _ts(nullable=False)
    delivered_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    attempts: int = 0
    next_attempt_at: Optional[dt.datetime] = _ts(nullable=True)
    last_error: Optional[str] = Field(default=None, max_length=500)
    active: bool = Field(default=True, index=True)


class WalletRow(KaccyTable, table=True):
    """A wallet added by `wallet add` (the `default` wallet is configured, not stored)."""

    __tablename__ = "kaccy_wallets"
    __table_args__ = (UniqueConstraint("number", name="uq_kaccy_wallets_number"),
                      UniqueConstraint("definition", name="uq_kaccy_wallets_definition"))
    name: str = Field(primary_key=True, max_length=32)
    number: int
    threshold: int
    keys: list = Field(sa_column=Column(JSON, nullable=False))    # key expressions with their origins
    # Wallet.definition(): two wallets of the same keys and threshold would share every address.
    definition: str = Field(max_length=64)
    created_at: dt.datetime = _ts(nullable=False)
class ConsolidationRow(KaccyTable, table=True):
    """Each wallet's UTXO consolidation machine, its current plan's inputs and withdrawal."""

    __tablename__ = "kaccy_consolidations"
    wallet: str = Field(primary_key=True, max_length=64)
    state: str = Field(index=True, max_length=20)
    history: list = Field(sa_column=Column(JSON, nullable=False))
    inputs: list = Field(sa_column=Column(JSON, nullable=False))
    withdrawal_id: Optional[str] = Field(default=None, max_length=64)
    updated_at: dt.datetime = _ts(nullable=False)
    version: int = Field(default=1, sa_column=Column(BigInteger, nullable=False, server_default="1"))


class LightningPayoutRow(KaccyTable, table=True):
    """A payout over Lightning (domain/lightning_payouts.py): the request, what it may cost,
    its machine and LND's answer."""

    __tablename__ = "kaccy_ln_payouts"
    payment_id: str = Field(primary_key=True, max_length=64)
    payment_hash: str = Field(index=True, max_length=64)
    payment_request: str = Field(max_length=4000)
    destination: str = Field(max_length=66)
    amount_msat: int = Field(sa_column=Column(BigInteger, nullable=False))
    max_fee_msat: int = Field(sa_column=Column(BigInteger, nullable=False))
    fee_msat: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    state: str = Field(index=True, max_length=20)
    history: list = Field(sa_column=Column(JSON, nullable=False))
    user_id: Optional[str] = Field(default=None, max_length=128)
    risk: dict = Field(sa_column=Column(JSON, nullable=False))
    approved_by: Optional[str] = Field(default=None, max_length=128)
    failure_reason: Optional[str] = Field(default=None, max_length=200)
    created_at: dt.datetime = _ts(nullable=False)
    version: int = Field(default=1, sa_column=Column(BigInteger, nullable=False, server_default="1"))


class MetricCounterRow(KaccyTable, table=True):
    """The figures `/metrics` reads from the database, moved by triggers as rows change
    (adapters/sql/metric_counters.py): `payments:<STATE>`, `withdrawals:<STATE>`, `received_sat`."""

    __tablename__ = "kaccy_metric_counters"
    name: str = Field(primary_key=True, max_length=64)
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


def _install_metric_counters(target: Any, connection: Any, **kw: Any) -> None:
    from kaccy_bitcoin.adapters.sql import metric_counters

    metric_counters.install(connection)


# A new database gets the counters' triggers with its tables (migration 0009 for an older one).
event.listen(metadata, "after_create", _install_metric_counters)


class SwapRow(KaccyTable, table=True):
    """Each atomic swap: its machine (state, history) and its record (domain/swaps.py) as JSON."""

    __tablename__ = "kaccy_swaps"
    swap_id: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=16)
    state: str = Field(index=True, max_length=20)
    key_index: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    watching: bool = Field(index=True)     # Swap.watching: the monitor still follows it
    history: list = Field(sa_column=Column(JSON, nullable=False))
    data: dict = Field(sa_column=Column(JSON, nullable=False))
    created_at: dt.datetime = _ts(nullable=False)
    updated_at: dt.datetime = _ts(nullable=False)
    version: int = Field(default=1, sa_column=Column(BigInteger, nullable=False, server_default="1"))
