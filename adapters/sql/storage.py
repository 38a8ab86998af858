"""SQLModel repositories and the unit of work that commits them in one transaction.

SQLite: WAL journal, and every transaction starts with BEGIN IMMEDIATE so writers
queue on the database lock instead of failing half-way. PostgreSQL: address-index
allocation takes a row lock (SELECT ... FOR UPDATE) on the chain's counter.
"""
from __future__ import annotations

import datetime as dt
import os
from collections import OrderedDict
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import bindparam, delete, event, func, insert, inspect, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, create_engine

from kaccy_bitcoin.adapters.sql import mapping
from kaccy_bitcoin.adapters.sql.tables import (
    AddressRow,
    AuditRow,
    CounterRow,
    CursorRow,
    OrderRow,
    OutputRow,
    PaymentRow,
    ReservationRow,
    WithdrawalRow,
    metadata,
)
from kaccy_bitcoin.domain.addresses import AddressEntry, MonitorCursor
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import CoinsReserved, ConcurrentUpdate, OrderConflict
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.orders import OutputStatus, Payment, PaymentRequest
from kaccy_bitcoin.domain.withdrawals import Withdrawal
from kaccy_bitcoin.ports import storage

_TERMINAL_PAYMENT_STATES = ("FINALIZED", "FAILED")


def make_engine(url: str) -> Engine:
    """An engine for `url`, with the tables created if missing."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    _upgrade(engine)
    return engine


def _upgrade(engine: Engine) -> None:
    """Columns added since a table was first created (create_all adds tables, not columns)."""
    columns = {c["name"] for c in inspect(engine).get_columns(PaymentRow.__tablename__)}
    if "version" not in columns:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {PaymentRow.__tablename__} "
                              "ADD COLUMN version BIGINT NOT NULL DEFAULT 1"))


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
    def __init__(self, session: Session, cache: OrderCache) -> None:
        self._s = session
        self._cache = cache
        self._added: set[str] = set()   # not committed yet: never cached

    def add(self, request: PaymentRequest) -> None:
        try:
            with self._s.begin_nested():
                self._s.add(mapping.order_to_row(request))
            self._added.add(request.order_id)
        except IntegrityError:
            raise OrderConflict(
                f"order {request.order_id} or address {request.address} already exists") from None

    def get(self, order_id: str) -> PaymentRequest | None:
        return self.get_many([order_id]).get(order_id)

    def get_many(self, order_ids: Iterable[str]) -> dict[str, PaymentRequest]:
        return self._lookup(OrderRow.__table__.c.order_id, order_ids, self._cache.get)

    def by_addresses(self, addresses: Iterable[str]) -> dict[str, PaymentRequest]:
        return self._lookup(OrderRow.__table__.c.address, addresses, self._cache.by_address)

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
        t = OrderRow.__table__
        for start in range(0, len(missing), 500):
            for row in self._s.execute(select(t).where(column.in_(missing[start:start + 500]))):
                request = mapping.order_from_row(row)
                if request.order_id not in self._added:
                    self._cache.put(request)
                found[getattr(row, column.name)] = request
        return found

    def expiring(self, now: dt.datetime) -> list[PaymentRequest]:
        q = (select(OrderRow).join(PaymentRow, PaymentRow.order_id == OrderRow.order_id, isouter=True)
             .where(OrderRow.expires_at.is_not(None), OrderRow.expires_at <= now)
             .where((PaymentRow.state == "PENDING") | (PaymentRow.state.is_(None)))
             .order_by(OrderRow.order_id))
        return [mapping.order_from_row(row) for (row,) in self._s.execute(q)]


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

    _payments = PaymentRow.__table__
    _outputs = OutputRow.__table__

    def __init__(self, session: Session, cache: PaymentCache) -> None:
        self._s = session
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
        p, o = self._payments, self._outputs
        guard = (p.c.order_id == bindparam("k_id")) & (p.c.version == bindparam("k_version"))
        for rows, columns in ((rewritten, mapping.PAYMENT_COLUMNS + ("version",)), (touched, ("version",))):
            if rows:
                done = self._s.execute(update(p).where(guard).values({c: bindparam(c) for c in columns}), rows)
                if done.rowcount != len(rows):
                    raise ConcurrentUpdate(
                        f"{len(rows) - done.rowcount} of {len(rows)} payments were changed by another "
                        "writer since they were read")
        try:
            if new_payments:
                self._s.execute(insert(p), new_payments)
            if new_outputs:
                self._s.execute(insert(o), new_outputs)
        except IntegrityError:
            raise ConcurrentUpdate("a payment or output was inserted by another writer at the same time") from None
        if moved_outputs:
            self._s.execute(
                update(o).where(o.c.txid == bindparam("k_txid"), o.c.vout == bindparam("k_vout"))
                .values({c: bindparam(c) for c in mapping.OUTPUT_STATE_COLUMNS}), moved_outputs)

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


def _snapshot(p: Payment) -> tuple[tuple, dict[OutPoint, tuple]]:
    head = (p.state, len(p.history), p.event_seq, p.reported_match, p.finality_alerted)
    return head, {op: (o.confirmations, o.status, o.block_hash, o.replaced_by) for op, o in p.outputs.items()}


class SqlWithdrawals(storage.WithdrawalRepository):
    def __init__(self, session: Session) -> None:
        self._s = session

    def get(self, withdrawal_id: str) -> Withdrawal | None:
        row = self._s.get(WithdrawalRow, withdrawal_id)
        return mapping.withdrawal_from_row(row) if row else None

    def save(self, withdrawal: Withdrawal) -> None:
        fields = mapping.withdrawal_fields(withdrawal)
        row = self._s.get(WithdrawalRow, withdrawal.withdrawal_id)
        if row is None:
            self._s.add(WithdrawalRow(withdrawal_id=withdrawal.withdrawal_id, **fields))
        else:
            for k, v in fields.items():
                setattr(row, k, v)
        self._s.flush()

    def in_states(self, states: Sequence[str]) -> list[Withdrawal]:
        q = select(WithdrawalRow).where(WithdrawalRow.state.in_([s.upper() for s in states]))
        return [mapping.withdrawal_from_row(r) for (r,) in self._s.execute(q.order_by(WithdrawalRow.created_at))]


class SqlAddressBook(storage.AddressBook):
    def __init__(self, session: Session) -> None:
        self._s = session

    def _counter(self, chain: int, lock: bool) -> CounterRow:
        q = select(CounterRow).where(CounterRow.chain == chain)
        if lock:
            q = q.with_for_update()
        row = self._s.execute(q).first()
        if row is None:
            try:
                with self._s.begin_nested():
                    self._s.add(CounterRow(chain=chain, next_index=0))
            except IntegrityError:
                pass
            row = self._s.execute(q).first()
        return row[0]

    def allocate(self, chain: int) -> int:
        counter = self._counter(chain, lock=True)
        index = counter.next_index
        counter.next_index = index + 1
        self._s.flush()
        return index

    def issued(self, chain: int) -> int:
        row = self._s.get(CounterRow, chain)
        return row.next_index if row else 0

    def record(self, entry: AddressEntry) -> None:
        row = self._s.get(AddressRow, entry.address)
        fields = {"chain": entry.chain, "index": entry.index, "label": entry.label,
                  "order_id": entry.order_id, "purpose": entry.purpose, "used": entry.used}
        if row is None:
            self._s.add(AddressRow(address=entry.address, **fields))
        else:
            for k, v in fields.items():
                setattr(row, k, v)
        self._s.flush()

    def get(self, address: str) -> AddressEntry | None:
        row = self._s.get(AddressRow, address)
        return _entry(row) if row else None

    def mark_used(self, addresses: Iterable[str]) -> None:
        wanted = list(set(addresses))
        for start in range(0, len(wanted), 500):
            self._s.execute(update(AddressRow).where(AddressRow.address.in_(wanted[start:start + 500]),
                                                     AddressRow.used.is_(False)).values(used=True))

    def unused_count(self, chain: int) -> int:
        q = select(func.count()).select_from(AddressRow).where(AddressRow.chain == chain,
                                                                 AddressRow.used.is_(False))
        return self._s.execute(q).one()[0]

    def entries(self) -> list[AddressEntry]:
        q = select(AddressRow).order_by(AddressRow.chain, AddressRow.index)
        return [_entry(r) for (r,) in self._s.execute(q)]


def _entry(row: AddressRow) -> AddressEntry:
    return AddressEntry(row.address, row.chain, row.index, row.label, row.order_id, row.purpose, row.used)


class SqlCursors(storage.CursorRepository):
    def __init__(self, session: Session) -> None:
        self._s = session

    def get(self, name: str) -> MonitorCursor | None:
        row = self._s.get(CursorRow, name)
        return MonitorCursor(row.block_hash, row.height) if row else None

    def set(self, name: str, cursor: MonitorCursor) -> None:
        row = self._s.get(CursorRow, name)
        if row is None:
            self._s.add(CursorRow(name=name, block_hash=cursor.block_hash, height=cursor.height))
        else:
            row.block_hash, row.height = cursor.block_hash, cursor.height
        self._s.flush()


class SqlAuditLog(storage.AuditLog):
    def __init__(self, session: Session) -> None:
        self._s = session

    def append(self, events: Sequence[DomainEvent]) -> list[DomainEvent]:
        ids = [e.id for e in events]
        seen: set[str] = set()
        with self._s.no_autoflush:
            for start in range(0, len(ids), 500):
                q = select(AuditRow.event_id).where(AuditRow.event_id.in_(ids[start:start + 500]))
                seen.update(i for (i,) in self._s.execute(q))
        new = [e for e in events if e.id not in seen]
        if new:
            self._s.execute(insert(AuditRow.__table__), [
                {"event_id": e.id, "kind": e.kind, "subject": e.subject, "at": e.at, "data": e.data} for e in new])
        return new

    def events(self, subject: str | None = None, limit: int = 1000) -> list[DomainEvent]:
        q = select(AuditRow)
        if subject is not None:
            q = q.where(AuditRow.subject == subject)
        return [mapping.event_from_row(r) for (r,) in self._s.execute(q.order_by(AuditRow.seq).limit(limit))]


class SqlReservations(storage.CoinReservations):
    """The primary key (txid, vout) is the lock: a second holder's insert fails, in any process."""

    _t = ReservationRow.__table__

    def __init__(self, session: Session) -> None:
        self._s = session

    def reserve(self, outpoints: Sequence[OutPoint], withdrawal_id: str, at: dt.datetime) -> None:
        held = {op: w for op, w in self.reserved().items() if op in set(outpoints)}
        taken = [op for op, w in held.items() if w != withdrawal_id]
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


class SqlUnitOfWork(storage.UnitOfWork):
    def __init__(self, engine: Engine, order_cache: OrderCache | None = None,
                 payment_cache: PaymentCache | None = None) -> None:
        super().__init__()
        self._engine = engine
        self._order_cache = order_cache if order_cache is not None else OrderCache()
        self._payment_cache = payment_cache if payment_cache is not None else PaymentCache()
        self._session: Session | None = None

    def _begin(self) -> None:
        self._session = s = Session(self._engine, expire_on_commit=False, autoflush=True)
        self.requests = SqlPaymentRequests(s, self._order_cache)
        self.payments = SqlPayments(s, self._payment_cache)
        self.withdrawals = SqlWithdrawals(s)
        self.addresses = SqlAddressBook(s)
        self.cursors = SqlCursors(s)
        self.audit = SqlAuditLog(s)
        self.reservations = SqlReservations(s)

    def _commit(self) -> None:
        if self._session is None:
            raise RuntimeError("commit() called outside `with uow:`")
        self._session.commit()
        self.payments.committed()

    def _rollback(self) -> None:
        if self._session is not None:
            self._session.rollback()

    def _close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class SqlUnitOfWorkFactory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.order_cache = OrderCache()
        self.payment_cache = PaymentCache()

    def __call__(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, self.order_cache, self.payment_cache)
