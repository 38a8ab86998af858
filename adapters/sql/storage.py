"""SQL repositories and the unit of work that commits them in one transaction, on SQLAlchemy
Core: one `Connection` per unit of work, the tables of core_tables.py (generated from the
SQLModel tables), no ORM session (importing the ORM and SQLModel would cost every command
about 80 ms, for nothing a repository needs).

SQLite: WAL journal, and every transaction starts with BEGIN IMMEDIATE so writers
queue on the database lock instead of failing half-way; a read-only unit of work
(`SqlUnitOfWorkFactory.read()`) begins a deferred transaction instead, a snapshot that
takes no write lock. PostgreSQL: address-index
allocation takes a row lock on the chain's counter (UPDATE ... RETURNING; order creation
commits it alone, so nobody queues behind a whole order's writes), and numbering the events
of the outbox (the audit log) locks the `events` sequence (SELECT ... FOR UPDATE).

Async code never waits for SQLite's write lock on its event loop: `async with uow` and the
service store's `run_writing` go through WriteGate (one writer of this process at a time, the
wait for another process's lock in a thread).
"""
from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import hashlib
import sqlite3
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import (BigInteger, bindparam, create_engine, delete, event, func, insert, literal, select,
                        update)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.exc import IntegrityError

from kaccy_bitcoin.adapters.sql import core_tables as tables
from kaccy_bitcoin.adapters.sql import mapping
from kaccy_bitcoin.adapters.sql import engine as opening, schema
from kaccy_bitcoin.adapters.sql.errors import DatabaseBusy
from kaccy_bitcoin.adapters.sql.ln_payouts import SqlLightningPayouts
from kaccy_bitcoin.adapters.sql.payjoins import SqlPayjoins
from kaccy_bitcoin.adapters.sql.swaps import SqlSwaps
from kaccy_bitcoin.domain.addresses import AddressEntry, MonitorCursor
from kaccy_bitcoin.domain.audit import GENESIS, AuditEntry
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.consolidation import Consolidation
from kaccy_bitcoin.domain.errors import CoinsReserved, ConcurrentUpdate, OrderConflict
from kaccy_bitcoin.domain.events import DomainEvent, StoredEvent
from kaccy_bitcoin.domain.limits import Limits, Usage
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.orders import OutputStatus, Payment, PaymentRequest
from kaccy_bitcoin.domain.wallets import Wallet
from kaccy_bitcoin.domain.withdrawals import Withdrawal
from kaccy_bitcoin.ports import storage

_TERMINAL_PAYMENT_STATES = ("FINALIZED", "FAILED")


# Execution option of the connections of a read-only unit of work (see SqlUnitOfWork).
READ_ONLY = "kaccy_read_only"
# Execution option: on SQLite, wait at most this many milliseconds for the write lock (instead
# of BUSY_TIMEOUT_MS) when the transaction begins (ServiceStore.check_writable's short wait).
LOCK_WAIT_MS = "kaccy_lock_wait_ms"
BUSY_TIMEOUT_MS = 60_000


class WriteLockBusy(Exception):
    """SQLite: another connection held the write lock longer than LOCK_WAIT_MS."""


def make_engine(url: str, *, check_schema: bool = True) -> Engine:
    """An engine for `url`. With `check_schema`, a new, empty database is created at the
    latest schema revision and one at any other revision is refused (DatabaseOutdated,
    DatabaseTooNew) before anything is read or written; `kaccy-bitcoin db upgrade` moves it.
    A database that cannot be reached raises DatabaseUnavailable, now or on a later use."""
    parsed = opening.parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        opening.make_sqlite_folder(parsed)
        # check_same_thread=False: a write unit of work may begin in a thread and go on on the
        # event loop (SqlUnitOfWork._begin_async); one thread at a time uses a connection.
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.close()

        engine.__class__ = _SqliteEngine   # BEGIN as below: see _SqliteConnection
    else:
        engine = opening.server_engine(parsed)
    opening.report_unreachable(engine, parsed)
    if check_schema:
        schema.ensure_current(engine)
    return engine


class _SqliteConnection(Connection):
    """Every SQLite transaction begins with BEGIN IMMEDIATE (it queues on the write lock instead
    of failing half-way), a read-only one (READ_ONLY) with a deferred BEGIN (a snapshot, no
    write lock), one with LOCK_WAIT_MS waits that long at most for the lock (WriteLockBusy).

    Done here rather than in a "begin" event listener: any connection event listener makes
    SQLAlchemy dispatch its (empty) events around every statement, about a quarter of a Core
    statement's own cost (13 of 52 us measured here)."""

    def _begin_impl(self, transaction: Any) -> None:
        super()._begin_impl(transaction)   # the bookkeeping; pysqlite's own do_begin does nothing
        options = self._execution_options
        raw = self.connection.dbapi_connection
        try:
            if options.get(READ_ONLY):
                raw.execute("BEGIN")
                return
            wait = options.get(LOCK_WAIT_MS)
            if wait is None:
                raw.execute("BEGIN IMMEDIATE")
                return
        except Exception as exc:  # noqa: BLE001 - as SQLAlchemy raises a failed BEGIN
            self._handle_dbapi_exception(exc, None, None, None, None)
        # Only BEGIN IMMEDIATE waits for the lock: the usual timeout is back right after it.
        raw.execute(f"PRAGMA busy_timeout={int(wait)}")
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            raise WriteLockBusy(f"another writer held the write lock over {int(wait)} ms") from None
        finally:
            raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class _SqliteOptionEngine(OptionEngine):
    _connection_cls = _SqliteConnection


class _SqliteEngine(Engine):
    """An SQLite engine whose connections (and those of its `execution_options` copies) are
    _SqliteConnection."""

    _connection_cls = _SqliteConnection
    _option_cls = _SqliteOptionEngine


_SqliteOptionEngine._option_cls = _SqliteOptionEngine


class OrderCache:
    """Orders never change once created (no update or delete exists), so units of work made
    by one factory share a bounded cache of them; a poll then reloads no order it has seen."""

    def __init__(self, size: int = 200_000) -> None:
        self._orders: OrderedDict[str, PaymentRequest] = OrderedDict()
        self._by_address: dict[str, str] = {}
        self._size = size

    def get(self, order_id: str) -> PaymentRequest | None:
        return self._orders.get(order_id)

    def by_address(self, address: str) -> PaymentRequest | None:
        order_id = self._by_address.get(address)
        return None if order_id is None else self._orders.get(order_id)

    def put(self, request: PaymentRequest) -> None:
        self._orders[request.order_id] = request
        self._by_address[request.address] = request.order_id
        if len(self._orders) > self._size:
            _, evicted = self._orders.popitem(last=False)
            self._by_address.pop(evicted.address, None)


class SqlPaymentRequests(storage.PaymentRequestRepository):
    _t = tables.orders
    _INSERT = insert(tables.orders)
    _ONE = {name: select(tables.orders).where(tables.orders.c[name] == bindparam("k"))
            for name in ("order_id", "address")}

    def __init__(self, conn: Connection, cache: OrderCache) -> None:
        self._s = conn
        self._cache = cache
        self._added: dict[str, PaymentRequest] = {}   # not committed yet: cached once committed

    def add(self, request: PaymentRequest) -> None:
        # No savepoint around it: after OrderConflict the unit of work is rolled back (PostgreSQL
        # refuses anything more in the transaction anyway).
        try:
            self._s.execute(self._INSERT, mapping.order_fields(request))
            self._added[request.order_id] = request
        except IntegrityError:
            raise OrderConflict(
                f"order {request.order_id} or address {request.address} already exists") from None

    def committed(self) -> None:
        """The unit of work committed: the orders it added are now rows (and never change)."""
        for request in self._added.values():
            self._cache.put(request)
        self._added.clear()

    def get(self, order_id: str) -> PaymentRequest | None:
        return self.get_many([order_id]).get(order_id)

    def get_many(self, order_ids: Iterable[str]) -> dict[str, PaymentRequest]:
        return self._lookup(self._t.c.order_id, order_ids, self._cache.get)

    def by_addresses(self, addresses: Iterable[str]) -> dict[str, PaymentRequest]:
        return self._lookup(self._t.c.address, addresses, self._cache.by_address)

    def _lookup(self, column, keys: Iterable[str], cached: Callable[[str], PaymentRequest | None],  # noqa: ANN001
                ) -> dict[str, PaymentRequest]:
        """Orders keyed by `column`'s value: from the cache, else one query per 500 keys."""
        found: dict[str, PaymentRequest] = {}
        missing = []
        for key in set(keys):
            request = cached(key)
            if request is None:
                missing.append(key)
            else:
                found[key] = request
        t = self._t
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            if len(chunk) == 1:   # the common case, one order: a statement built once
                rows = self._s.execute(self._ONE[column.name], {"k": chunk[0]})
            else:
                rows = self._s.execute(select(t).where(column.in_(chunk)))
            for row in rows:
                request = mapping.order_from_row(row)
                if request.order_id not in self._added:
                    self._cache.put(request)
                found[getattr(row, column.name)] = request
        return found

    _BY_TOKEN = select(tables.orders).where(tables.orders.c.checkout_token == bindparam("k"))

    def by_checkout_token(self, token: str) -> PaymentRequest | None:
        row = self._s.execute(self._BY_TOKEN, {"k": token}).first()
        return mapping.order_from_row(row) if row is not None else None

    def expiring(self, now: dt.datetime) -> list[PaymentRequest]:
        o, p = self._t, tables.payments
        q = (select(o).join(p, p.c.order_id == o.c.order_id, isouter=True)
             .where(o.c.expires_at.is_not(None), o.c.expires_at <= now)
             .where((p.c.state == "PENDING") | (p.c.state.is_(None)))
             .order_by(o.c.order_id))
        return [mapping.order_from_row(row) for row in self._s.execute(q)]

    def search(self, *, state: str | None = None, label: str | None = None, after: str | None = None,
               limit: int = 100) -> list[PaymentRequest]:
        o, p = self._t, tables.payments
        q = select(o).order_by(o.c.order_id).limit(limit)
        if state is not None:
            q = q.join(p, p.c.order_id == o.c.order_id).where(p.c.state == state)
        if label is not None:
            q = q.where(o.c.label == label)
        if after is not None:
            q = q.where(o.c.order_id > after)
        return [mapping.order_from_row(row) for row in self._s.execute(q)]


class PaymentCache:
    """Payments as committed, each with the version its row had, shared by the units of work
    of one factory. An entry is used only while the row still has that version, so a payment
    written by another process (or by a unit of work here that rolled back) is read again."""

    def __init__(self, size: int = 50_000) -> None:
        self._items: OrderedDict[str, tuple[int, Payment]] = OrderedDict()
        self._size = size

    def get(self, order_id: str, version: int) -> Payment | None:
        item = self._items.get(order_id)
        if item is None or item[0] != version:
            return None
        return item[1].copy()

    def put(self, order_id: str, version: int, payment: Payment) -> None:
        """Keep `payment` (which nobody may change afterwards) as the row at `version`.

        Settled payments (finalized, failed) are not kept: the monitor reads one again only
        when something arrives late, and they would otherwise fill the cache."""
        if payment.machine.is_terminal:
            self._items.pop(order_id, None)
            return
        self._items[order_id] = (version, payment)
        self._items.move_to_end(order_id)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


class SqlPayments(storage.PaymentRepository):
    """Core-level reads and batched writes: a poll touching 1,000 payments makes a few
    statements, builds no ORM objects, and writes only what changed since it was loaded
    (a new depth rewrites an output's depth columns, not the payment's history).

    Every write bumps the payment row's version, guarded by `WHERE version = <as read>`:
    a payment changed by another writer since it was read raises ConcurrentUpdate (the
    unit of work rolls back and the caller retries), and a payment whose row still has the
    version of a cached copy is not read again."""

    _payments = tables.payments
    _outputs = tables.received_outputs

    def __init__(self, conn: Connection, cache: PaymentCache) -> None:
        self._s = conn
        self._cache = cache
        self._versions: dict[str, int] = {}   # as read (or written) in this unit of work
        self._loaded: dict[str, tuple[tuple, dict[OutPoint, tuple]]] = {}
        self._written: dict[str, Payment] = {}   # for the cache, once committed

    def get(self, order_id: str) -> Payment | None:
        return self.get_many([order_id]).get(order_id)

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        wanted = set(order_ids)
        self._read_versions([i for i in wanted if i not in self._versions])
        found: dict[str, Payment] = {}
        missing = []
        for order_id in wanted:
            version = self._versions.get(order_id)
            if version is None:
                continue
            cached = None if order_id in self._written else self._cache.get(order_id, version)
            if cached is None:
                missing.append(order_id)
            else:
                found[order_id] = cached
        p = self._payments
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            rows = list(self._s.execute(select(p).where(p.c.order_id.in_(chunk))))
            outputs: dict[str, list[Any]] = {}
            for o in self._s.execute(select(self._outputs).where(self._outputs.c.order_id.in_(chunk))):
                outputs.setdefault(o.order_id, []).append(o)
            for row in rows:
                payment = mapping.payment_from_rows(row, outputs.get(row.order_id, []))
                self._versions[row.order_id] = row.version
                if row.order_id not in self._written:
                    self._cache.put(row.order_id, row.version, payment.copy())
                found[row.order_id] = payment
        for order_id, payment in found.items():
            self._loaded[order_id] = _snapshot(payment)
        return found

    def _read_versions(self, order_ids: list[str]) -> None:
        p = self._payments
        if len(order_ids) == 1:
            self._versions.update(self._s.execute(_ONE_VERSION, {"k": order_ids[0]}).all())
            return
        for start in range(0, len(order_ids), 500):
            q = select(p.c.order_id, p.c.version).where(p.c.order_id.in_(order_ids[start:start + 500]))
            self._versions.update({order_id: version for order_id, version in self._s.execute(q)})

    def save(self, payments: Sequence[Payment]) -> None:
        new_payments: list[dict] = []
        rewritten: list[dict] = []    # the payment's own columns changed
        touched: list[dict] = []      # only its outputs changed: bump the version
        new_outputs: list[dict] = []
        moved_outputs: list[dict] = []
        for pay in payments:
            order_id = pay.order_id
            head, outs = _snapshot(pay)
            loaded_head, loaded_outs = self._loaded.get(order_id, (None, {}))
            added = [op for op in pay.outputs if op not in loaded_outs]
            moved = [op for op in pay.outputs if op in loaded_outs and outs[op] != loaded_outs[op]]
            version = self._versions.get(order_id)
            if version is None:
                new_payments.append({"order_id": order_id, "version": 1, **mapping.payment_fields(pay)})
            elif head != loaded_head:
                rewritten.append({"k_id": order_id, "k_version": version, "version": version + 1,
                                  **mapping.payment_fields(pay)})
            elif added or moved:
                touched.append({"k_id": order_id, "k_version": version, "version": version + 1})
            else:
                continue
            new_outputs += [{"txid": op.txid.value, "vout": op.vout, **mapping.output_fields(order_id, pay.outputs[op])}
                            for op in added]
            moved_outputs += [{"k_txid": op.txid.value, "k_vout": op.vout, **mapping.output_state(pay.outputs[op])}
                              for op in moved]
            self._versions[order_id] = 1 if version is None else version + 1
            self._loaded[order_id] = (head, outs)
            self._written[order_id] = pay
        for rows, stmt in ((rewritten, _REWRITE_PAYMENT), (touched, _TOUCH_PAYMENT)):
            if rows:
                done = self._s.execute(stmt, rows)
                if done.rowcount != len(rows):
                    raise ConcurrentUpdate(
                        f"{len(rows) - done.rowcount} of {len(rows)} payments were changed by another "
                        "writer since they were read")
        try:
            if new_payments:
                self._s.execute(_INSERT_PAYMENT, new_payments)
            if new_outputs:
                self._s.execute(_INSERT_OUTPUT, new_outputs)
        except IntegrityError:
            raise ConcurrentUpdate("a payment or output was inserted by another writer at the same time") from None
        if moved_outputs:
            self._s.execute(_MOVE_OUTPUT, moved_outputs)

    def committed(self) -> None:
        """The unit of work committed: what it wrote is now the rows' state."""
        for order_id, payment in self._written.items():
            self._cache.put(order_id, self._versions[order_id], payment.copy())
        self._written.clear()

    def unsettled_outputs(self) -> dict[OutPoint, storage.StoredOutput]:
        p, o = self._payments, self._outputs
        q = (select(o.c.txid, o.c.vout, o.c.order_id, o.c.confirmations, o.c.block_hash, p.c.version)
             .join(p, p.c.order_id == o.c.order_id)
             .where(p.c.state.not_in(_TERMINAL_PAYMENT_STATES), o.c.status == "active"))
        found: dict[OutPoint, storage.StoredOutput] = {}
        versions = self._versions
        for txid, vout, order_id, conf, block, version in self._s.execute(q):
            found[OutPoint(Txid(txid), vout)] = storage.StoredOutput(order_id, conf, OutputStatus.ACTIVE, block)
            versions.setdefault(order_id, version)
        return found

    def by_outpoints(self, outpoints: Iterable[OutPoint]) -> dict[OutPoint, storage.StoredOutput]:
        wanted = {(x.txid.value, x.vout): x for x in outpoints}
        txids = list({t for t, _ in wanted})
        found: dict[OutPoint, storage.StoredOutput] = {}
        p, o = self._payments, self._outputs
        versions = self._versions
        # By txid, the primary key's leading column (simpler for the planner than row values);
        # the other outputs of the same transactions are dropped here.
        for start in range(0, len(txids), 500):
            q = (select(o.c.txid, o.c.vout, o.c.order_id, o.c.confirmations, o.c.status, o.c.block_hash,
                        p.c.version)
                 .join(p, p.c.order_id == o.c.order_id)
                 .where(o.c.txid.in_(txids[start:start + 500])))
            for txid, vout, order_id, conf, status, block, version in self._s.execute(q):
                outpoint = wanted.get((txid, vout))
                if outpoint is not None:
                    found[outpoint] = storage.StoredOutput(order_id, conf, OutputStatus(status), block)
                    versions.setdefault(order_id, version)
        return found


# The statements of SqlPayments.save, built once (building one costs more than running it).
_P, _O = tables.payments, tables.received_outputs
_PAYMENT_GUARD = (_P.c.order_id == bindparam("k_id")) & (_P.c.version == bindparam("k_version"))
_REWRITE_PAYMENT = update(_P).where(_PAYMENT_GUARD).values(
    {c: bindparam(c) for c in mapping.PAYMENT_COLUMNS + ("version",)})
_TOUCH_PAYMENT = update(_P).where(_PAYMENT_GUARD).values(version=bindparam("version"))
_INSERT_PAYMENT = insert(_P)
_INSERT_OUTPUT = insert(_O)
_MOVE_OUTPUT = (update(_O).where(_O.c.txid == bindparam("k_txid"), _O.c.vout == bindparam("k_vout"))
                .values({c: bindparam(c) for c in mapping.OUTPUT_STATE_COLUMNS}))
_ONE_VERSION = select(tables.payments.c.order_id, tables.payments.c.version).where(
    tables.payments.c.order_id == bindparam("k"))


def _snapshot(p: Payment) -> tuple[tuple, dict[OutPoint, tuple]]:
    head = (p.state, len(p.history), p.event_seq, p.reported_match, p.finality_alerted, p.paid_reported,
            tuple(sorted(p.lightning.items())), p.zeroconf)
    return head, {op: (o.confirmations, o.status, o.block_hash, o.replaced_by) for op, o in p.outputs.items()}


class SqlWithdrawals(storage.WithdrawalRepository):
    """Core-level reads and writes; every update is guarded by `WHERE version = <as read>`."""

    _t = tables.withdrawals

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def _select(self, where) -> list[Withdrawal]:  # noqa: ANN001
        q = select(self._t).where(where).order_by(self._t.c.created_at, self._t.c.withdrawal_id)
        return [mapping.withdrawal_from_row(r) for r in self._s.execute(q)]

    def get(self, withdrawal_id: str) -> Withdrawal | None:
        found = self._select(self._t.c.withdrawal_id == withdrawal_id)
        return found[0] if found else None

    def save(self, withdrawal: Withdrawal) -> None:
        fields = mapping.withdrawal_fields(withdrawal)
        t = self._t
        if withdrawal.version == 0:
            try:
                with self._s.begin_nested():
                    self._s.execute(insert(t).values(withdrawal_id=withdrawal.withdrawal_id, version=1, **fields))
            except IntegrityError:
                raise ConcurrentUpdate(f"withdrawal {withdrawal.withdrawal_id} already exists") from None
        else:
            done = self._s.execute(update(t).where(t.c.withdrawal_id == withdrawal.withdrawal_id,
                                                   t.c.version == withdrawal.version)
                                   .values(version=withdrawal.version + 1, **fields))
            if done.rowcount != 1:
                raise ConcurrentUpdate(f"withdrawal {withdrawal.withdrawal_id} was changed by another process "
                                       "since it was read; nothing was written")
        withdrawal.version += 1

    def in_states(self, states: Sequence[str]) -> list[Withdrawal]:
        return self._select(self._t.c.state.in_([s.upper() for s in states]))

    def unsettled(self) -> list[Withdrawal]:
        return self._select(self._t.c.settled.is_(False))

    def by_txids(self, txids: Iterable[Txid]) -> dict[Txid, Withdrawal]:
        wanted = [t.value for t in set(txids)]
        found: dict[Txid, Withdrawal] = {}
        for start in range(0, len(wanted), 500):
            for w in self._select(self._t.c.txid.in_(wanted[start:start + 500])):
                found[w.txid] = w  # type: ignore[index]
        return found


class SqlInvoices(storage.InvoiceRepository):
    """Core-level reads and writes; every update is guarded by `WHERE version = <as read>`."""

    _t = tables.ln_invoices

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def _select(self, where, newest_first: bool = False) -> list[OrderInvoice]:  # noqa: ANN001
        order = (self._t.c.created_at.desc(), self._t.c.add_index.desc()) if newest_first else (
            self._t.c.created_at, self._t.c.add_index)
        return [mapping.invoice_from_row(r) for r in self._s.execute(select(self._t).where(where).order_by(*order))]

    def add(self, invoice: OrderInvoice) -> None:
        try:
            with self._s.begin_nested():
                self._s.execute(insert(self._t).values(payment_hash=invoice.payment_hash, version=1,
                                                       **mapping.invoice_fields(invoice)))
        except IntegrityError:
            raise ConcurrentUpdate(f"invoice {invoice.payment_hash} is already stored") from None
        invoice.version = 1

    def save(self, invoice: OrderInvoice) -> None:
        t = self._t
        done = self._s.execute(update(t).where(t.c.payment_hash == invoice.payment_hash,
                                               t.c.version == invoice.version)
                               .values(version=invoice.version + 1, **mapping.invoice_fields(invoice)))
        if done.rowcount != 1:
            raise ConcurrentUpdate(f"invoice {invoice.payment_hash} was changed by another process since it "
                                   "was read; nothing was written")
        invoice.version += 1

    def get(self, payment_hash: str) -> OrderInvoice | None:
        found = self._select(self._t.c.payment_hash == payment_hash)
        return found[0] if found else None

    def by_hashes(self, payment_hashes: Iterable[str]) -> dict[str, OrderInvoice]:
        wanted = list(set(payment_hashes))
        found: dict[str, OrderInvoice] = {}
        for start in range(0, len(wanted), 500):
            for invoice in self._select(self._t.c.payment_hash.in_(wanted[start:start + 500])):
                found[invoice.payment_hash] = invoice
        return found

    def for_order(self, order_id: str) -> list[OrderInvoice]:
        return self._select(self._t.c.order_id == order_id, newest_first=True)

    def open(self) -> list[OrderInvoice]:
        return self._select(self._t.c.state.in_(("OPEN", "PENDING")))

    def for_orders(self, order_ids: Iterable[str]) -> dict[str, OrderInvoice]:
        wanted = list(set(order_ids))
        newest: dict[str, OrderInvoice] = {}
        for start in range(0, len(wanted), 500):
            for invoice in self._select(self._t.c.order_id.in_(wanted[start:start + 500]), newest_first=True):
                newest.setdefault(invoice.order_id, invoice)
        return newest


class SqlAddressBook(storage.AddressBook):
    _t = tables.addresses
    _counters = tables.address_counters

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def _locked_counter(self, chain: int) -> int:
        """The chain's next index, with the counter's row lock held until the transaction
        ends; a chain without a counter gets one (of two creating it at once, one insert
        fails and that writer waits for the other's row)."""
        c = self._counters
        q = select(c.c.next_index).where(c.c.chain == chain).with_for_update()
        value = self._s.execute(q).scalar()
        if value is None:
            try:
                with self._s.begin_nested():
                    self._s.execute(insert(c).values(chain=chain, next_index=0))
            except IntegrityError:
                pass
            value = self._s.execute(q).scalar_one()
        return value

    BUMP = (update(_counters).where(_counters.c.chain == bindparam("k_chain"))
            .values(next_index=_counters.c.next_index + 1).returning(_counters.c.next_index))

    def allocate(self, chain: int) -> int:
        # One statement: the row lock it takes is held until the transaction ends.
        value = self._s.execute(self.BUMP, {"k_chain": chain}).scalar()
        if value is None:   # the chain's first index: its counter first (another writer may race us)
            self._locked_counter(chain)
            value = self._s.execute(self.BUMP, {"k_chain": chain}).scalar_one()
        return value - 1

    def issued(self, chain: int) -> int:
        c = self._counters
        return self._s.execute(select(c.c.next_index).where(c.c.chain == chain)).scalar() or 0

    def record(self, entry: AddressEntry) -> None:
        fields = {"address": entry.address, "chain": entry.chain, "index": entry.index, "label": entry.label,
                  "order_id": entry.order_id, "purpose": entry.purpose, "used": entry.used}
        self._s.execute(_upsert(self._s, self._t, "address"), fields)

    def get(self, address: str) -> AddressEntry | None:
        row = self._s.execute(select(self._t).where(self._t.c.address == address)).first()
        return _entry(row) if row else None

    def mark_used(self, addresses: Iterable[str]) -> None:
        t = self._t
        wanted = list(set(addresses))
        for start in range(0, len(wanted), 500):
            self._s.execute(update(t).where(t.c.address.in_(wanted[start:start + 500]), t.c.used.is_(False))
                            .values(used=True))

    def unused_count(self, chain: int) -> int:
        t = self._t
        q = select(func.count()).select_from(t).where(t.c.chain == chain, t.c.used.is_(False))
        return self._s.execute(q).one()[0]

    def entries(self) -> list[AddressEntry]:
        q = select(self._t).order_by(self._t.c.chain, self._t.c.index)
        return [_entry(r) for r in self._s.execute(q)]


_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert(conn: Connection, table: Any, key: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE of every other column, for this connection's
    dialect (PostgreSQL or SQLite), built once; execute it with the row's values."""
    dialect = conn.dialect.name
    built = _UPSERTS.get((dialect, table.name))
    if built is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(table)
        built = stmt.on_conflict_do_update(index_elements=[table.c[key]],
                                           set_={c.name: stmt.excluded[c.name] for c in table.c if c.name != key})
        _UPSERTS[(dialect, table.name)] = built
    return built


def _entry(row: Any) -> AddressEntry:
    return AddressEntry(row.address, row.chain, row.index, row.label, row.order_id, row.purpose, row.used)


class SqlCursors(storage.CursorRepository):
    _t = tables.cursors

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def get(self, name: str) -> MonitorCursor | None:
        row = self._s.execute(select(self._t).where(self._t.c.name == name)).first()
        return MonitorCursor(row.block_hash, row.height) if row else None

    def set(self, name: str, cursor: MonitorCursor) -> None:
        t = self._t
        values = {"block_hash": cursor.block_hash, "height": cursor.height}
        if self._s.execute(select(t.c.name).where(t.c.name == name)).first() is None:
            self._s.execute(insert(t).values(name=name, **values))
        else:
            self._s.execute(update(t).where(t.c.name == name).values(**values))


EVENTS_SEQUENCE = "events"


class SqlAuditLog(storage.AuditLog):
    """The outbox. `seq` comes from the `events` row of kaccy_sequences, read with
    SELECT ... FOR UPDATE (PostgreSQL; on SQLite, BEGIN IMMEDIATE already serializes writers)
    and advanced in the same transaction: the next writer of events waits for this one to
    commit or roll back, so sequence order is commit order and a rollback leaves no gap."""

    _t = tables.audit_log
    _seq = tables.sequences

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def append(self, events: Sequence[DomainEvent]) -> list[DomainEvent]:
        if not events:
            return []
        # The work's own writes went to the database when they were made (no session holds
        # any back), so nothing waits for another lock while this transaction holds the
        # sequence (two writers could otherwise deadlock).
        last = self._lock_sequence()
        ids = [e.id for e in events]
        seen: set[str] = set()
        for start in range(0, len(ids), 500):
            q = select(self._t.c.event_id).where(self._t.c.event_id.in_(ids[start:start + 500]))
            seen.update(i for (i,) in self._s.execute(q))
        new = [e for e in events if e.id not in seen]
        if new:
            prev = self._head_hash(last)
            rows = []
            for n, e in enumerate(new, 1):
                entry = AuditEntry.chained(prev, last + n, e.id, e.kind, e.subject, e.actor, e.at, e.data)
                rows.append({"seq": entry.seq, "event_id": e.id, "kind": e.kind, "subject": e.subject, "at": e.at,
                             "data": e.data, "actor": e.actor, "prev_hash": entry.prev_hash, "hash": entry.hash})
                prev = entry.hash
            self._s.execute(insert(self._t), rows)
            self._s.execute(update(self._seq).where(self._seq.c.name == EVENTS_SEQUENCE)
                            .values(value=last + len(new)))
        return new

    def _head_hash(self, last: int) -> str:
        """The hash of entry `last` (read under the sequence's lock, so the chain stays linear
        across processes); GENESIS before the first entry."""
        if last == 0:
            return GENESIS
        found = self._s.execute(select(self._t.c.hash).where(self._t.c.seq == last)).scalar()
        if found is None:   # the head was removed from the database: chain on what remains
            found = self._s.execute(select(self._t.c.hash).order_by(self._t.c.seq.desc()).limit(1)).scalar()
        return found or GENESIS

    def _lock_sequence(self) -> int:
        """The last sequence number handed out, with the counter's row lock held until the
        transaction ends. A database without the counter (new, or from before the outbox)
        gets it here, starting after the highest seq already stored; when two writers
        create it at once, one insert fails and that writer waits for the other's row."""
        q = select(self._seq.c.value).where(self._seq.c.name == EVENTS_SEQUENCE).with_for_update()
        value = self._s.execute(q).scalar()
        if value is None:
            highest = self._s.execute(select(func.coalesce(func.max(self._t.c.seq), 0))).scalar_one()
            try:
                with self._s.begin_nested():
                    self._s.execute(insert(self._seq).values(name=EVENTS_SEQUENCE, value=highest))
            except IntegrityError:
                pass
            value = self._s.execute(q).scalar_one()
        return value

    def events(self, subject: str | None = None, limit: int = 1000) -> list[DomainEvent]:
        q = select(self._t)
        if subject is not None:
            q = q.where(self._t.c.subject == subject)
        return [mapping.event_from_row(r) for r in self._s.execute(q.order_by(self._t.c.seq).limit(limit))]

    def after(self, seq: int, limit: int) -> list[StoredEvent]:
        # Bound as BIGINT: any cursor a consumer may hold compares, whatever the column's width.
        q = select(self._t).where(self._t.c.seq > literal(seq, BigInteger)).order_by(self._t.c.seq).limit(limit)
        return [StoredEvent(r.seq, mapping.event_from_row(r)) for r in self._s.execute(q)]

    def last_seq(self) -> int:
        return self._s.execute(select(func.coalesce(func.max(self._t.c.seq), 0))).scalar_one()

    def entries(self, subject: str | None = None, since: dt.datetime | None = None,
                after: int = 0, limit: int | None = None) -> list[AuditEntry]:
        t = self._t
        q = select(t).where(t.c.seq > literal(after, BigInteger))
        if subject is not None:
            q = q.where(t.c.subject == subject)
        if since is not None:
            q = q.where(t.c.at >= since)
        q = q.order_by(t.c.seq)
        if limit is not None:
            q = q.limit(limit)
        return [mapping.audit_entry_from_row(r) for r in self._s.execute(q)]

    def handed_out(self) -> int:
        counted = self._s.execute(select(self._seq.c.value).where(self._seq.c.name == EVENTS_SEQUENCE)).scalar()
        return max(counted or 0, self.last_seq())


class SqlLimits(storage.LimitStore):
    """Limits rows double as the per-scope lock (SELECT ... FOR UPDATE; on SQLite the
    transaction's BEGIN IMMEDIATE already serializes every writer). On PostgreSQL a scope
    without limits has no row to lock, yet its history is read under the lock (the risk
    review): each scope also takes a transaction-scoped advisory lock of its own."""

    _t = tables.limits
    _u = tables.limit_usage

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def get(self, scope: str) -> Limits | None:
        row = self._s.execute(select(self._t).where(self._t.c.scope == scope)).first()
        return mapping.limits_from_row(row) if row else None

    def set(self, limits: Limits, at: dt.datetime) -> None:
        t = self._t
        values = {"daily_sat": limits.daily_sat, "monthly_sat": limits.monthly_sat,
                  "single_max_sat": limits.single_max_sat, "hourly_sat": limits.hourly_sat, "updated_at": at}
        done = self._s.execute(update(t).where(t.c.scope == limits.scope).values(**values))
        if done.rowcount == 0:
            try:
                with self._s.begin_nested():
                    self._s.execute(insert(t).values(scope=limits.scope, **values))
            except IntegrityError:   # another process created it at the same moment: ours is the later word
                self._s.execute(update(t).where(t.c.scope == limits.scope).values(**values))

    def lock(self, scopes: Sequence[str]) -> dict[str, Limits]:
        found: dict[str, Limits] = {}
        for scope in scopes:
            if self._s.dialect.name == "postgresql":
                self._s.execute(select(func.pg_advisory_xact_lock(LIMITS_LOCK_CLASS, _int32(scope))))
            row = self._s.execute(select(self._t).where(self._t.c.scope == scope).with_for_update()).first()
            if row is not None:
                found[scope] = mapping.limits_from_row(row)
        return found

    def _usage(self, where) -> list[Usage]:  # noqa: ANN001
        q = select(self._u).where(where).order_by(self._u.c.at, self._u.c.withdrawal_id)
        return [mapping.usage_from_row(r) for r in self._s.execute(q)]

    def user_usage(self, user: str, since: dt.datetime) -> list[Usage]:
        return self._usage((self._u.c.user_id == user) & (self._u.c.at >= since))

    def platform_usage(self, since: dt.datetime) -> list[Usage]:
        return self._usage(self._u.c.at >= since)

    def take(self, usage: Usage) -> None:
        self._s.execute(insert(self._u).values(
            withdrawal_id=usage.withdrawal_id, user_id=usage.user, amount_sat=usage.amount_sat, at=usage.at,
            returned=usage.returned, destinations=list(usage.destinations)))

    def give_back(self, withdrawal_id: str) -> None:
        self._s.execute(update(self._u).where(self._u.c.withdrawal_id == withdrawal_id, self._u.c.returned.is_(False))
                        .values(returned=True))

    def adjust(self, withdrawal_id: str, amount_sat: int) -> None:
        self._s.execute(update(self._u).where(self._u.c.withdrawal_id == withdrawal_id,
                                              self._u.c.amount_sat > amount_sat).values(amount_sat=amount_sat))

    def take_again(self, withdrawal_id: str) -> bool:
        done = self._s.execute(update(self._u).where(self._u.c.withdrawal_id == withdrawal_id,
                                                     self._u.c.returned.is_(True)).values(returned=False))
        return done.rowcount == 1


class SqlEventConsumers(storage.EventConsumers):
    _t = tables.event_consumers

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def acknowledged(self, name: str) -> int:
        return self._s.execute(select(self._t.c.after_seq).where(self._t.c.name == name)).scalar() or 0

    def acknowledge(self, name: str, seq: int, at: dt.datetime) -> int:
        t = self._t
        if self._s.execute(select(t.c.name).where(t.c.name == name)).first() is None:
            try:
                with self._s.begin_nested():
                    self._s.execute(insert(t).values(name=name, after_seq=seq, updated_at=at))
                return seq
            except IntegrityError:
                pass   # another process acknowledged first for this consumer: move it forward below
        # Only forwards, even against a concurrent acknowledgement (the WHERE is re-checked
        # on the row once the other writer's lock is gone).
        self._s.execute(update(t).where(t.c.name == name, t.c.after_seq < seq).values(after_seq=seq, updated_at=at))
        return self.acknowledged(name)


class SqlReservations(storage.CoinReservations):
    """The primary key (txid, vout) is the lock: a second holder's insert fails, in any process."""

    _t = tables.coin_reservations

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def reserve(self, outpoints: Sequence[OutPoint], withdrawal_id: str, at: dt.datetime,
                shared_with: Iterable[str] = ()) -> None:
        held = {op: w for op, w in self.reserved().items() if op in set(outpoints)}
        allowed = {withdrawal_id, *shared_with}
        taken = [op for op, w in held.items() if w not in allowed]
        if taken:
            raise CoinsReserved(f"coin {taken[0]} is held by withdrawal {held[taken[0]]}")
        rows = [{"txid": op.txid.value, "vout": op.vout, "withdrawal_id": withdrawal_id, "reserved_at": at}
                for op in outpoints if op not in held]
        if not rows:
            return
        try:
            with self._s.begin_nested():
                self._s.execute(insert(self._t), rows)
        except IntegrityError:
            raise CoinsReserved("a coin was reserved by another withdrawal at the same moment") from None

    def release(self, withdrawal_id: str) -> None:
        self._s.execute(delete(self._t).where(self._t.c.withdrawal_id == withdrawal_id))

    def reserved(self) -> dict[OutPoint, str]:
        rows = self._s.execute(select(self._t.c.txid, self._t.c.vout, self._t.c.withdrawal_id))
        return {OutPoint(Txid(t), v): w for t, v, w in rows}


class SqlWallets(storage.WalletRepository):
    _t = tables.wallets

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def add(self, wallet: Wallet) -> None:
        try:
            with self._s.begin_nested():
                self._s.execute(insert(self._t).values(mapping.wallet_fields(wallet)))
        except IntegrityError:
            raise ConcurrentUpdate(f"a wallet named {wallet.name!r}, numbered {wallet.number} or of the same keys "
                                   "was added by another writer at the same time") from None

    def _one(self, where) -> Wallet | None:  # noqa: ANN001
        row = self._s.execute(select(self._t).where(where)).first()
        return mapping.wallet_from_row(row) if row else None

    def get(self, name: str) -> Wallet | None:
        return self._one(self._t.c.name == name)

    def by_number(self, number: int) -> Wallet | None:
        return self._one(self._t.c.number == number)

    def by_definition(self, definition: str) -> Wallet | None:
        return self._one(self._t.c.definition == definition)

    def all(self) -> list[Wallet]:
        return [mapping.wallet_from_row(r) for r in self._s.execute(select(self._t).order_by(self._t.c.number))]

    def next_number(self) -> int:
        # PostgreSQL: wallets are numbered one writer at a time (a lock held until this
        # transaction ends), so processes adding wallets at once do not all take the same
        # number and fail; SQLite's BEGIN IMMEDIATE already serializes writers.
        if self._s.dialect.name == "postgresql":
            self._s.execute(select(func.pg_advisory_xact_lock(WALLET_NUMBERING_LOCK)))
        return self._s.execute(select(func.coalesce(func.max(self._t.c.number), 0))).scalar_one() + 1


def _int32(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)


# The class of the per-scope limits locks (PostgreSQL's two-key advisory locks are apart from
# the one-key ones: no clash with the keys below or leadership's).
LIMITS_LOCK_CLASS = _int32("kaccy-bitcoin:limits")

# A transaction-scoped advisory lock key (per database) for numbering wallets.
WALLET_NUMBERING_LOCK = int.from_bytes(hashlib.sha256(b"kaccy-bitcoin:wallet-numbering").digest()[:8], "big",
                                       signed=True)


class SqlConsolidations(storage.ConsolidationRepository):
    """One row per wallet; every update is guarded by `WHERE version = <as read>`."""

    _t = tables.consolidations

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def get(self, wallet: str) -> Consolidation | None:
        row = self._s.execute(select(self._t).where(self._t.c.wallet == wallet)).first()
        return mapping.consolidation_from_row(row) if row is not None else None

    def save(self, consolidation: Consolidation) -> None:
        last = consolidation.machine.history[-1].at if consolidation.machine.history else dt.datetime.now(dt.UTC)
        fields = mapping.consolidation_fields(consolidation, last)
        t = self._t
        if consolidation.version == 0:
            try:
                with self._s.begin_nested():
                    self._s.execute(insert(t).values(wallet=consolidation.wallet, version=1, **fields))
            except IntegrityError:
                raise ConcurrentUpdate(f"the consolidation of wallet {consolidation.wallet!r} was started by "
                                       "another process") from None
        else:
            done = self._s.execute(update(t).where(t.c.wallet == consolidation.wallet,
                                                   t.c.version == consolidation.version)
                                   .values(version=consolidation.version + 1, **fields))
            if done.rowcount != 1:
                raise ConcurrentUpdate(f"the consolidation of wallet {consolidation.wallet!r} was changed by "
                                       "another process since it was read; nothing was written")
        consolidation.version += 1

    def in_flight(self) -> list[Consolidation]:
        t = self._t
        q = select(t).where(t.c.withdrawal_id.is_not(None), t.c.state.in_(("PLANNED", "CONSOLIDATING")))
        return [mapping.consolidation_from_row(r) for r in self._s.execute(q.order_by(t.c.wallet))]


class SqlAnalytics(storage.Analytics):
    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def received(self) -> tuple[int, int]:
        t = tables.received_outputs
        q = select(func.count(), func.coalesce(func.sum(t.c.amount_sat), 0)).where(
            t.c.status == OutputStatus.ACTIVE.value, t.c.confirmations >= 1)
        count, total = self._s.execute(q).one()
        return int(count), int(total)

    def received_since(self, since: dt.datetime) -> list[tuple[dt.datetime, int]]:
        t = tables.received_outputs
        q = select(t.c.first_seen, t.c.amount_sat).where(
            t.c.status == OutputStatus.ACTIVE.value, t.c.confirmations >= 1, t.c.first_seen >= since)
        return [(mapping.utc(seen), int(sat)) for seen, sat in self._s.execute(q)]


_READ_ONLY_ENGINES: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _read_only(engine: Engine) -> Engine:
    """The engine marked READ_ONLY (made once per engine: making one costs more than a query)."""
    found = _READ_ONLY_ENGINES.get(engine)
    if found is None:
        found = _READ_ONLY_ENGINES[engine] = engine.execution_options(**{READ_ONLY: True})
    return found


_NO_WAIT_ENGINES: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _no_wait(engine: Engine) -> Engine:
    """The engine whose transactions begin only if SQLite's write lock is free now (else
    WriteLockBusy), made once per engine."""
    found = _NO_WAIT_ENGINES.get(engine)
    if found is None:
        found = _NO_WAIT_ENGINES[engine] = engine.execution_options(**{LOCK_WAIT_MS: 0})
    return found


# Set while WriteGate.run tries a write on the event loop: writes begin only if the lock is free.
_TRYING_NOW: contextvars.ContextVar[bool] = contextvars.ContextVar("kaccy_trying_now", default=False)


def writer(engine: Engine) -> Engine:
    """The engine a write transaction of the service store begins on (see WriteGate.run)."""
    return _no_wait(engine) if _TRYING_NOW.get() else engine


_BEGIN_THREADS: list[ThreadPoolExecutor] = []
_BEGIN_THREADS_LOCK = threading.Lock()
# Threads that begin write units of work and run the service store's writes: as many as the
# pool's connections (QueuePool's 5 + 10 overflow), more would only wait for one; apart from
# the loop's default executor, so writers waiting for a lock never hold up other threaded work.
BEGIN_THREADS = 16


def _begin_threads() -> ThreadPoolExecutor:
    with _BEGIN_THREADS_LOCK:
        if not _BEGIN_THREADS:
            _BEGIN_THREADS.append(ThreadPoolExecutor(BEGIN_THREADS, thread_name_prefix="kaccy-db-write"))
        return _BEGIN_THREADS[0]


class WriteGate:
    """How this process's async code gets to write, without blocking its event loop.

    SQLite has one write lock per database: the process's writers queue on an asyncio.Lock
    first (in order, holding no thread and no connection); the one at the head takes SQLite's
    lock on the loop if it is free right now (BEGIN IMMEDIATE with no busy wait: no thread
    hop in the usual case), else waits for it in a thread (another process holds it). So
    the loop never waits for another process, and waiting writers never use up the
    connection pool that the loop's reads draw from. PostgreSQL writers do not exclude each
    other and BEGIN waits for no lock: they run on the loop, as the units of work do there
    (in threads, the service store's writes cost an order creation 2.5 -> 3.3 ms of CPU in
    bench/api_load.py, threads queuing on the GIL)."""

    def __init__(self, engine: Engine) -> None:
        self._one_writer = engine.dialect.name == "sqlite"
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    async def enter(self) -> asyncio.Lock | None:
        """Wait for this process's turn to write; the lock to release when done (None: no turn)."""
        if not self._one_writer:
            return None
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        if not lock.locked():
            await lock.acquire()
            return lock
        try:   # as long as SQLite's own busy timeout: a writer never waits for good
            await asyncio.wait_for(lock.acquire(), BUSY_TIMEOUT_MS / 1000)
        except asyncio.TimeoutError:
            raise DatabaseBusy(f"the database is busy: this process's writers queued over "
                               f"{BUSY_TIMEOUT_MS // 1000} s") from None
        return lock

    async def run(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args)` (whole write transactions that begin on `writer(engine)`), in this
        process's turn: on the loop when SQLite's lock is free now, else in a thread."""
        lock = await self.enter()
        if lock is None:   # PostgreSQL: see the class's docstring
            return call(*args)
        trying = _TRYING_NOW.set(True)
        try:
            result = call(*args)
        except WriteLockBusy:
            pass   # nothing was written: again in a thread, waiting for the lock
        except BaseException:
            lock.release()
            raise
        else:
            lock.release()
            return result
        finally:
            _TRYING_NOW.reset(trying)
        done = asyncio.get_running_loop().run_in_executor(_begin_threads(), call, *args)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            if lock is not None:   # the thread goes on: the turn ends when it does
                done.add_done_callback(lambda _done: lock.release())
                lock = None
            raise
        finally:
            if lock is not None:
                lock.release()


_GATES: weakref.WeakKeyDictionary[Engine, WriteGate] = weakref.WeakKeyDictionary()


def write_gate(engine: Engine) -> WriteGate:
    """The engine's WriteGate (one per engine: its writers share it)."""
    found = _GATES.get(engine)
    if found is None:
        found = _GATES[engine] = WriteGate(engine)
    return found


class SqlUnitOfWork(storage.UnitOfWork):
    """One Core connection; its transaction begins with the first statement (SQLite: BEGIN
    IMMEDIATE, see make_engine) and ends with commit() or the rollback on leaving the block.

    `read_only`: for reading only (commit() is refused). On SQLite it begins a deferred
    transaction, which reads a consistent snapshot without taking the write lock, so a
    use case can read, wait on the node, then write in a second, short unit of work.

    `async with` on SQLite: a writing unit of work waits for this process's turn to write
    (WriteGate), then begins on the loop if the write lock is free now, else in a thread
    (BEGIN IMMEDIATE waits there, up to the busy timeout, while another process writes) that
    hands the connection back to the loop: one thread uses it at a time. The statements and
    the COMMIT run on the loop: holding the write lock, they wait for no other writer. A
    read-only unit of work begins on the loop: on SQLite's WAL a reader waits for nobody.
    On PostgreSQL a unit of work begins on the loop as with `with`: its BEGIN waits for no
    lock (it goes with the first statement), and connections begun in threads would pile up
    waiting for the loop, emptying the pool the loop itself draws from."""

    def __init__(self, engine: Engine, order_cache: OrderCache | None = None,
                 payment_cache: PaymentCache | None = None, *, read_only: bool = False) -> None:
        super().__init__()
        self._engine = engine
        self._order_cache = order_cache if order_cache is not None else OrderCache()
        self._payment_cache = payment_cache if payment_cache is not None else PaymentCache()
        self._conn: Connection | None = None
        self._turn: asyncio.Lock | None = None   # this process's turn to write (WriteGate), if taken
        self.read_only = read_only

    @property
    def connection(self) -> Connection | None:
        """The transaction's connection (None outside `with`)."""
        return self._conn

    def _begin(self, bind: Engine | None = None) -> None:
        if bind is None:
            bind = _read_only(self._engine) if self.read_only else self._engine
        self._conn = c = bind.connect()
        self.requests = SqlPaymentRequests(c, self._order_cache)
        self.payments = SqlPayments(c, self._payment_cache)
        self.withdrawals = SqlWithdrawals(c)
        self.invoices = SqlInvoices(c)
        self.ln_payouts = SqlLightningPayouts(c)
        self.addresses = SqlAddressBook(c)
        self.cursors = SqlCursors(c)
        self.audit = SqlAuditLog(c)
        self.consumers = SqlEventConsumers(c)
        self.reservations = SqlReservations(c)
        self.limits = SqlLimits(c)
        self.wallets = SqlWallets(c)
        self.consolidations = SqlConsolidations(c)
        self.swaps = SqlSwaps(c)
        self.payjoins = SqlPayjoins(c)
        self.analytics = SqlAnalytics(c)

    async def _begin_async(self) -> None:
        self._turn = None if self.read_only else await write_gate(self._engine).enter()
        if self._turn is None:   # reading, or PostgreSQL: BEGIN waits for nothing
            self._begin()
            return
        try:   # SQLite: begin here if the write lock is free now
            self._begin(_no_wait(self._engine))
            self._conn.begin()  # type: ignore[union-attr] - set by _begin
            return
        except WriteLockBusy:
            self._conn.close()  # type: ignore[union-attr]
            self._conn = None
        except BaseException:
            self._close()
            raise
        began = asyncio.get_running_loop().run_in_executor(_begin_threads(), self._begin_writing)
        try:
            await asyncio.shield(began)
        except asyncio.CancelledError:
            # Cancelled while the thread waits: what it gets is let go as soon as it has it.
            began.add_done_callback(lambda _done: self._close())
            raise
        except BaseException:
            self._close()
            raise

    def _begin_writing(self) -> None:
        """In a thread: check a connection out and begin (SQLite: BEGIN IMMEDIATE, which waits
        for the write lock)."""
        self._begin()
        try:
            self._conn.begin()  # type: ignore[union-attr] - set by _begin
        except BaseException:
            self._conn.close()  # type: ignore[union-attr]
            self._conn = None
            raise

    def _commit(self) -> None:
        if self._conn is None:
            raise RuntimeError("commit() called outside `with uow:`")
        if self.read_only:
            raise RuntimeError("commit() called on a read-only unit of work")
        self._conn.commit()
        self.requests.committed()
        self.payments.committed()

    def _rollback(self) -> None:
        if self._conn is not None:
            self._conn.rollback()

    def _close(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        finally:
            if self._turn is not None:   # this process's next writer may begin
                self._turn.release()
                self._turn = None


class SqlUnitOfWorkFactory(storage.UnitOfWorkFactory):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.order_cache = OrderCache()
        self.payment_cache = PaymentCache()

    def __call__(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, self.order_cache, self.payment_cache)

    def read(self) -> SqlUnitOfWork:
        """A unit of work for reading only: on SQLite it takes no write lock."""
        return SqlUnitOfWork(self.engine, self.order_cache, self.payment_cache, read_only=True)
