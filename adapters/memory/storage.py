"""In-memory repositories with the same transactional behaviour as the SQL adapter.

Each table keeps committed rows in a shared `MemoryStore` and a unit of work's
writes in a private overlay; objects are copied in and out, so changing an
aggregate after `save` (or without saving) never leaks into the store.
"""
from __future__ import annotations

import copy
import datetime as dt
import threading

import attrs
from typing import Any, Iterable, Iterator, Sequence

from kaccy_bitcoin.domain.addresses import AddressEntry, MonitorCursor
from kaccy_bitcoin.domain.audit import GENESIS, AuditEntry
from kaccy_bitcoin.domain.limits import Limits, Usage
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.events import DomainEvent, StoredEvent
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.lightning_payouts import LightningPayout
from kaccy_bitcoin.domain.consolidation import Consolidation
from kaccy_bitcoin.domain.orders import OutputStatus, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import PaymentState
from kaccy_bitcoin.domain.withdrawals import Withdrawal
from kaccy_bitcoin.ports import storage
from kaccy_bitcoin.domain.errors import CoinsReserved, ConcurrentUpdate, OrderConflict
from kaccy_bitcoin.domain.wallets import Wallet


class MemoryStore:
    """The committed state shared by every unit of work made from it."""

    TABLES = ("requests", "order_by_address", "payments", "withdrawals", "invoices", "addresses", "counters",
              "cursors", "audit", "audit_entries", "consumers", "reservations", "limits", "limit_usage", "wallets",
              "consolidations", "ln_payouts", "swaps", "payjoins", "payjoin_inputs")

    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, Any]] = {name: {} for name in self.TABLES}
        self.audit_order: list[str] = []   # committed event ids; an event's seq is its place here, from 1
        self.lock = threading.Lock()
        # Held by a unit of work from numbering its events until it commits or rolls back, as
        # the SQL adapter holds the sequence's row lock: sequence order is commit order.
        self.events_lock = threading.Lock()
        # Held by a unit of work from locking limits until it commits or rolls back (the SQL
        # adapter's row locks on kaccy_limits).
        self.limits_lock = threading.Lock()


class _Table:
    """Committed rows plus this unit of work's pending writes."""

    def __init__(self, committed: dict[Any, Any]) -> None:
        self.committed = committed
        self.pending: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        if key in self.pending:
            return copy.deepcopy(self.pending[key])
        return copy.deepcopy(self.committed.get(key))

    def put(self, key: Any, value: Any) -> None:
        self.pending[key] = copy.deepcopy(value)

    def __contains__(self, key: Any) -> bool:
        return key in self.pending or key in self.committed

    def values(self) -> Iterator[Any]:
        for key, value in self.committed.items():
            if key not in self.pending:
                yield value
        yield from self.pending.values()


class MemoryPaymentRequests(storage.PaymentRequestRepository):
    def __init__(self, table: _Table, by_address: _Table, payments: _Table) -> None:
        self._t = table
        self._by_address = by_address   # address -> order id: O(1) per output, never a scan
        self._payments = payments

    def add(self, request: PaymentRequest) -> None:
        if request.order_id in self._t:
            raise OrderConflict(f"order {request.order_id} already exists")
        if request.address in self._by_address:
            raise OrderConflict(f"address {request.address} already belongs to an order")
        self._t.put(request.order_id, request)
        self._by_address.put(request.address, request.order_id)

    def get(self, order_id: str) -> PaymentRequest | None:
        return self._t.get(order_id)

    def get_many(self, order_ids: Iterable[str]) -> dict[str, PaymentRequest]:
        return {i: r for i in set(order_ids) if (r := self._t.get(i)) is not None}

    def by_addresses(self, addresses: Iterable[str]) -> dict[str, PaymentRequest]:
        found = {}
        for address in set(addresses):
            order_id = self._by_address.get(address)
            if order_id is not None:
                found[address] = self._t.get(order_id)
        return found

    def by_checkout_token(self, token: str) -> PaymentRequest | None:
        # A scan: the in-memory store is for tests and small embeddings.
        return next((r for r in self._t.values() if r.checkout_token is not None and r.checkout_token == token),
                    None)

    def expiring(self, now: dt.datetime) -> list[PaymentRequest]:
        out = []
        for r in self._t.values():
            if r.expires_at is None or r.expires_at > now:
                continue
            payment = self._payments.get(r.order_id)
            if payment is None or payment.state is PaymentState.PENDING:
                out.append(r)
        return sorted(out, key=lambda r: r.order_id)

    def search(self, *, state: str | None = None, label: str | None = None, after: str | None = None,
               limit: int = 100) -> list[PaymentRequest]:
        out = []
        for r in sorted(self._t.values(), key=lambda r: r.order_id):
            if after is not None and r.order_id <= after or label is not None and r.label != label:
                continue
            payment = self._payments.get(r.order_id)
            if state is not None and (payment.state.name if payment else "PENDING") != state:
                continue
            out.append(r)
            if len(out) == limit:
                break
        return out


class MemoryPayments(storage.PaymentRepository):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def get(self, order_id: str) -> Payment | None:
        payment = self._t.get(order_id)
        if payment is not None:
            payment.events = []
        return payment

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        return {i: p for i in set(order_ids) if (p := self.get(i)) is not None}

    def save(self, payments: Sequence[Payment]) -> None:
        for payment in payments:
            stored = copy.copy(payment)
            stored.events = []
            self._t.put(payment.order_id, stored)

    def unsettled_outputs(self) -> dict[OutPoint, storage.StoredOutput]:
        return {o.outpoint: storage.StoredOutput(p.order_id, o.confirmations, o.status, o.block_hash)
                for p in self._t.values() if not p.machine.is_terminal for o in p.counted()}

    def by_outpoints(self, outpoints: Iterable[OutPoint]) -> dict[OutPoint, storage.StoredOutput]:
        wanted = set(outpoints)
        return {op: storage.StoredOutput(p.order_id, o.confirmations, o.status, o.block_hash)
                for p in self._t.values() for op, o in p.outputs.items() if op in wanted}


class MemoryWithdrawals(storage.WithdrawalRepository):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def get(self, withdrawal_id: str) -> Withdrawal | None:
        return self._t.get(withdrawal_id)

    def save(self, withdrawal: Withdrawal) -> None:
        stored = self._t.get(withdrawal.withdrawal_id)
        if (stored.version if stored is not None else 0) != withdrawal.version:
            raise ConcurrentUpdate(f"withdrawal {withdrawal.withdrawal_id} was changed by another unit of work "
                                   "since it was read; nothing was written")
        withdrawal.version += 1
        self._t.put(withdrawal.withdrawal_id, withdrawal)

    def _all(self) -> list[Withdrawal]:
        return sorted((copy.deepcopy(w) for w in self._t.values()), key=lambda w: (w.created_at, w.withdrawal_id))

    def in_states(self, states: Sequence[str]) -> list[Withdrawal]:
        wanted = {s.upper() for s in states}
        return [w for w in self._all() if w.state.name in wanted]

    def unsettled(self) -> list[Withdrawal]:
        return [w for w in self._all() if not w.settled]

    def by_txids(self, txids: Iterable[Txid]) -> dict[Txid, Withdrawal]:
        wanted = set(txids)
        return {w.txid: w for w in self._all() if w.txid in wanted}  # type: ignore[misc]


class MemoryInvoices(storage.InvoiceRepository):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def _copy(self, invoice: OrderInvoice | None) -> OrderInvoice | None:
        if invoice is None:
            return None
        made = copy.deepcopy(invoice)
        made.events = []
        return made

    def add(self, invoice: OrderInvoice) -> None:
        if self._t.get(invoice.payment_hash) is not None:
            raise ConcurrentUpdate(f"invoice {invoice.payment_hash} is already stored")
        invoice.version = 1
        self._t.put(invoice.payment_hash, self._copy(invoice))

    def save(self, invoice: OrderInvoice) -> None:
        stored = self._t.get(invoice.payment_hash)
        if stored is None or stored.version != invoice.version:
            raise ConcurrentUpdate(f"invoice {invoice.payment_hash} was changed by another unit of work "
                                   "since it was read; nothing was written")
        invoice.version += 1
        self._t.put(invoice.payment_hash, self._copy(invoice))

    def get(self, payment_hash: str) -> OrderInvoice | None:
        return self._copy(self._t.get(payment_hash))

    def by_hashes(self, payment_hashes: Iterable[str]) -> dict[str, OrderInvoice]:
        return {h: i for h in set(payment_hashes) if (i := self.get(h)) is not None}

    def _all(self) -> list[OrderInvoice]:
        return sorted((self._copy(i) for i in self._t.values()), key=lambda i: (i.created_at, i.add_index))

    def for_order(self, order_id: str) -> list[OrderInvoice]:
        return [i for i in reversed(self._all()) if i.order_id == order_id]

    def open(self) -> list[OrderInvoice]:
        return [i for i in self._all() if i.is_open]

    def for_orders(self, order_ids: Iterable[str]) -> dict[str, OrderInvoice]:
        wanted = set(order_ids)
        newest: dict[str, OrderInvoice] = {}
        for invoice in reversed(self._all()):
            if invoice.order_id in wanted:
                newest.setdefault(invoice.order_id, invoice)
        return newest


class MemoryAddressBook(storage.AddressBook):
    def __init__(self, table: _Table, counters: _Table) -> None:
        self._t = table
        self._counters = counters

    def allocate(self, chain: int) -> int:
        index = self._counters.get(chain) or 0
        self._counters.put(chain, index + 1)
        return index

    def issued(self, chain: int) -> int:
        return self._counters.get(chain) or 0

    def record(self, entry: AddressEntry) -> None:
        self._t.put(entry.address, entry)

    def get(self, address: str) -> AddressEntry | None:
        return self._t.get(address)

    def mark_used(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            entry = self._t.get(address)
            if entry is not None and not entry.used:
                entry.used = True
                self._t.put(address, entry)

    def unused_count(self, chain: int) -> int:
        return sum(1 for e in self._t.values() if e.chain == chain and not e.used)

    def entries(self) -> list[AddressEntry]:
        return sorted((copy.deepcopy(e) for e in self._t.values()), key=lambda e: (e.chain, e.index))


class MemoryCursors(storage.CursorRepository):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def get(self, name: str) -> MonitorCursor | None:
        return self._t.get(name)

    def set(self, name: str, cursor: MonitorCursor) -> None:
        self._t.put(name, cursor)


class MemoryAuditLog(storage.AuditLog):
    def __init__(self, table: _Table, order: list[str], events_lock: threading.Lock, entries: _Table) -> None:
        self._t = table
        self._entries = entries
        self._order = order
        self._events_lock = events_lock
        self.holds_sequence = False
        self.pending_order: list[str] = []

    def append(self, events: Sequence[DomainEvent]) -> list[DomainEvent]:
        if not events:
            return []
        if not self.holds_sequence:
            self._events_lock.acquire()
            self.holds_sequence = True
        new = [e for e in events if e.id not in self._t]
        ids = self._order + self.pending_order
        prev = self._entries.get(ids[-1]).hash if ids else GENESIS
        for event in new:
            entry = AuditEntry.chained(prev, len(ids) + 1, event.id, event.kind, event.subject, event.actor,
                                       event.at, copy.deepcopy(event.data))
            self._t.put(event.id, event)
            self._entries.put(event.id, entry)
            self.pending_order.append(event.id)
            ids.append(event.id)
            prev = entry.hash
        return new

    def events(self, subject: str | None = None, limit: int = 1000) -> list[DomainEvent]:
        ids = self._order + self.pending_order
        found = (self._t.get(i) for i in ids)
        return [e for e in found if subject is None or e.subject == subject][:limit]

    def after(self, seq: int, limit: int) -> list[StoredEvent]:
        start = max(seq, 0)
        ids = self._order[start:start + max(limit, 0)]
        return [StoredEvent(n, self._t.get(i)) for n, i in enumerate(ids, start + 1)]

    def last_seq(self) -> int:
        return len(self._order)

    def entries(self, subject: str | None = None, since: dt.datetime | None = None,
                after: int = 0, limit: int | None = None) -> list[AuditEntry]:
        found = [e for e in (self._entries.get(i) for i in self._order[max(after, 0):])
                 if (subject is None or e.subject == subject) and (since is None or e.at >= since)]
        return found if limit is None else found[:limit]

    def handed_out(self) -> int:
        return len(self._order)

    def release_sequence(self) -> None:
        if self.holds_sequence:
            self.holds_sequence = False
            self._events_lock.release()


class MemoryEventConsumers(storage.EventConsumers):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def acknowledged(self, name: str) -> int:
        return self._t.get(name) or 0

    def acknowledge(self, name: str, seq: int, at: dt.datetime) -> int:
        current = self.acknowledged(name)
        if seq > current:
            self._t.put(name, seq)
            return seq
        return current


class MemoryReservations(storage.CoinReservations):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def reserve(self, outpoints: Sequence[OutPoint], withdrawal_id: str, at: dt.datetime,
                shared_with: Iterable[str] = ()) -> None:
        allowed = {None, withdrawal_id, *shared_with}
        taken = [op for op in outpoints if self._t.get(op) not in allowed]
        if taken:
            raise CoinsReserved(f"coin {taken[0]} is held by withdrawal {self._t.get(taken[0])}")
        for op in outpoints:
            if self._t.get(op) is None:
                self._t.put(op, withdrawal_id)

    def release(self, withdrawal_id: str) -> None:
        for op, holder in list(self._t.committed.items()) + list(self._t.pending.items()):
            if holder == withdrawal_id:
                self._t.put(op, None)

    def reserved(self) -> dict[OutPoint, str]:
        merged = {**self._t.committed, **self._t.pending}
        return {op: w for op, w in merged.items() if w is not None}


class MemoryLimits(storage.LimitStore):
    def __init__(self, limits: _Table, usage: _Table, lock: threading.Lock) -> None:
        self._t, self._u, self._lock = limits, usage, lock
        self.holds_lock = False

    def get(self, scope: str) -> Limits | None:
        return self._t.get(scope)

    def set(self, limits: Limits, at: dt.datetime) -> None:
        self._t.put(limits.scope, limits)

    def lock(self, scopes: Sequence[str]) -> dict[str, Limits]:
        if not self.holds_lock:
            self._lock.acquire()
            self.holds_lock = True
        return {scope: found for scope in scopes if (found := self._t.get(scope)) is not None}

    def release_lock(self) -> None:
        if self.holds_lock:
            self.holds_lock = False
            self._lock.release()

    def _usage(self, keep) -> list[Usage]:  # noqa: ANN001
        return sorted((u for u in self._u.values() if keep(u)), key=lambda u: (u.at, u.withdrawal_id))

    def user_usage(self, user: str, since: dt.datetime) -> list[Usage]:
        return self._usage(lambda u: u.user == user and u.at >= since)

    def platform_usage(self, since: dt.datetime) -> list[Usage]:
        return self._usage(lambda u: u.at >= since)

    def take(self, usage: Usage) -> None:
        self._u.put(usage.withdrawal_id, usage)

    def give_back(self, withdrawal_id: str) -> None:
        found = self._u.get(withdrawal_id)
        if found is not None and not found.returned:
            self._u.put(withdrawal_id, attrs.evolve(found, returned=True))

    def adjust(self, withdrawal_id: str, amount_sat: int) -> None:
        found = self._u.get(withdrawal_id)
        if found is not None and amount_sat < found.amount_sat:
            self._u.put(withdrawal_id, attrs.evolve(found, amount_sat=amount_sat))

    def take_again(self, withdrawal_id: str) -> bool:
        found = self._u.get(withdrawal_id)
        if found is None or not found.returned:
            return False
        self._u.put(withdrawal_id, attrs.evolve(found, returned=False))
        return True


class MemoryLightningPayouts(storage.LightningPayoutRepository):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def add(self, payout: LightningPayout) -> None:
        if payout.payment_id in self._t or payout.version != 0:
            raise ConcurrentUpdate(f"Lightning payment {payout.payment_id} exists already")
        payout.version = 1
        self._t.put(payout.payment_id, payout)

    def save(self, payout: LightningPayout) -> None:
        stored = self._t.get(payout.payment_id)
        if stored is None or stored.version != payout.version:
            raise ConcurrentUpdate(f"Lightning payment {payout.payment_id} was changed by another unit of work "
                                   "since it was read; nothing was written")
        payout.version += 1
        self._t.put(payout.payment_id, payout)

    def get(self, payment_id: str) -> LightningPayout | None:
        return self._t.get(payment_id)

    def for_hash(self, payment_hash: str) -> list[LightningPayout]:
        return sorted((copy.deepcopy(p) for p in self._t.values() if p.payment_hash == payment_hash),
                      key=lambda p: (p.created_at, p.payment_id))


class MemoryWallets(storage.WalletRepository):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def add(self, wallet: Wallet) -> None:
        if wallet.name in self._t or any(w.number == wallet.number or w.definition() == wallet.definition()
                                         for w in self._t.values()):
            raise ConcurrentUpdate(f"a wallet named {wallet.name!r}, numbered {wallet.number} or of the same keys "
                                   "exists")
        self._t.put(wallet.name, wallet)

    def get(self, name: str) -> Wallet | None:
        return self._t.get(name)

    def by_definition(self, definition: str) -> Wallet | None:
        return next((w for w in self._t.values() if w.definition() == definition), None)

    def by_number(self, number: int) -> Wallet | None:
        return next((w for w in self._t.values() if w.number == number), None)

    def all(self) -> list[Wallet]:
        return sorted(self._t.values(), key=lambda w: w.number)

    def next_number(self) -> int:
        return max((w.number for w in self._t.values()), default=0) + 1


class MemoryConsolidations(storage.ConsolidationRepository):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def get(self, wallet: str) -> Consolidation | None:
        return self._t.get(wallet)

    def save(self, consolidation: Consolidation) -> None:
        stored = self._t.get(consolidation.wallet)
        if (stored.version if stored is not None else 0) != consolidation.version:
            raise ConcurrentUpdate(f"the consolidation of wallet {consolidation.wallet!r} was changed by another "
                                   "unit of work since it was read; nothing was written")
        consolidation.version += 1
        self._t.put(consolidation.wallet, consolidation)

    def in_flight(self) -> list[Consolidation]:
        return sorted((copy.deepcopy(c) for c in self._t.values() if c.in_flight), key=lambda c: c.wallet)


class MemorySwaps(storage.SwapRepository):
    def __init__(self, table: _Table) -> None:
        self._t = table

    def get(self, swap_id: str) -> Any:
        stored = self._t.get(swap_id)
        return copy.deepcopy(stored) if stored is not None else None

    def save(self, swap: Any) -> None:
        stored = self._t.get(swap.swap_id)
        if (stored.version if stored is not None else 0) != swap.version:
            raise ConcurrentUpdate(f"swap {swap.swap_id!r} was changed by another unit of work since it was read; "
                                   "nothing was written")
        if stored is None and any(s.key_index == swap.key_index for s in self._t.values()):
            raise ConcurrentUpdate(f"key index {swap.key_index} is already another swap's")
        swap.version += 1
        self._t.put(swap.swap_id, copy.deepcopy(swap))

    def all(self, state: str | None = None) -> list[Any]:
        return [copy.deepcopy(s) for s in sorted(self._t.values(), key=lambda s: (s.created_at, s.swap_id))
                if state is None or s.state.name == state]

    def watching(self) -> list[Any]:
        return [s for s in self.all() if s.watching]


class MemoryPayjoins(storage.PayjoinRepository):
    def __init__(self, table: _Table, inputs: _Table) -> None:
        self._t = table
        self._inputs = inputs

    def add(self, session: Any) -> None:
        if session.token in self._t or any(s.order_id == session.order_id for s in self._t.values()):
            raise ConcurrentUpdate(f"order {session.order_id!r} has a payjoin session already")
        session.version = 1
        self._t.put(session.token, session)

    def save(self, session: Any) -> None:
        stored = self._t.get(session.token)
        if stored is None or stored.version != session.version:
            raise ConcurrentUpdate(f"the payjoin session of order {session.order_id!r} was changed by another "
                                   "unit of work since it was read; nothing was written")
        session.version += 1
        self._t.put(session.token, session)

    def get(self, token: str) -> Any:
        return self._t.get(token)

    def for_orders(self, order_ids: Iterable[str]) -> dict[str, Any]:
        ids = set(order_ids)
        return {s.order_id: copy.deepcopy(s) for s in self._t.values() if s.order_id in ids}

    def by_proposal_txids(self, txids: Iterable[Any]) -> dict[Any, Any]:
        wanted = set(txids)
        return {s.proposal_txid: copy.deepcopy(s) for s in self._t.values() if s.proposal_txid in wanted}

    def open(self) -> list[Any]:
        return sorted((copy.deepcopy(s) for s in self._t.values() if s.open), key=lambda s: (s.created_at, s.token))

    def seen_inputs(self, outpoints: Iterable[OutPoint]) -> set[OutPoint]:
        return {op for op in outpoints if op in self._inputs}

    def record_inputs(self, outpoints: Sequence[OutPoint], token: str) -> None:
        if any(op in self._inputs for op in outpoints):
            raise ConcurrentUpdate("an input of this original was offered to another payjoin meanwhile")
        for op in outpoints:
            self._inputs.put(op, token)


class MemoryAnalytics(storage.Analytics):
    def __init__(self, payments: _Table) -> None:
        self._payments = payments

    def received(self) -> tuple[int, int]:
        outputs = [o for p in self._payments.values() for o in p.outputs.values()
                   if o.status is OutputStatus.ACTIVE and o.confirmations >= 1]
        return len(outputs), sum(o.amount.value for o in outputs)

    def received_since(self, since: dt.datetime) -> list[tuple[dt.datetime, int]]:
        return [(o.first_seen, o.amount.value) for p in self._payments.values() for o in p.outputs.values()
                if o.status is OutputStatus.ACTIVE and o.confirmations >= 1 and o.first_seen >= since]


class MemoryUnitOfWork(storage.UnitOfWork):
    """`read_only`: for reading only, as the SQL adapter's (commit() is refused)."""

    def __init__(self, store: MemoryStore, *, read_only: bool = False) -> None:
        super().__init__()
        self._store = store
        self._tables: dict[str, _Table] = {}
        self.read_only = read_only

    def _begin(self) -> None:
        t = self._tables = {name: _Table(self._store.tables[name]) for name in MemoryStore.TABLES}
        self.requests = MemoryPaymentRequests(t["requests"], t["order_by_address"], t["payments"])
        self.payments = MemoryPayments(t["payments"])
        self.withdrawals = MemoryWithdrawals(t["withdrawals"])
        self.invoices = MemoryInvoices(t["invoices"])
        self.ln_payouts = MemoryLightningPayouts(t["ln_payouts"])
        self.addresses = MemoryAddressBook(t["addresses"], t["counters"])
        self.cursors = MemoryCursors(t["cursors"])
        self.audit = MemoryAuditLog(t["audit"], self._store.audit_order, self._store.events_lock,
                                    t["audit_entries"])
        self.limits = MemoryLimits(t["limits"], t["limit_usage"], self._store.limits_lock)
        self.consumers = MemoryEventConsumers(t["consumers"])
        self.reservations = MemoryReservations(t["reservations"])
        self.wallets = MemoryWallets(t["wallets"])
        self.consolidations = MemoryConsolidations(t["consolidations"])
        self.swaps = MemorySwaps(t["swaps"])
        self.payjoins = MemoryPayjoins(t["payjoins"], t["payjoin_inputs"])
        self.analytics = MemoryAnalytics(t["payments"])

    def _commit(self) -> None:
        if self.read_only:
            raise RuntimeError("commit() called on a read-only unit of work")
        with self._store.lock:
            for name, table in self._tables.items():
                if name == "consumers":   # acknowledgements only move forwards, whoever commits last
                    for key, seq in table.pending.items():
                        table.committed[key] = max(seq, table.committed.get(key, 0))
                else:
                    table.committed.update(table.pending)
                table.pending.clear()
            self._store.audit_order.extend(self.audit.pending_order)  # type: ignore[attr-defined]
            self.audit.pending_order.clear()  # type: ignore[attr-defined]
        self.audit.release_sequence()  # type: ignore[attr-defined]
        self.limits.release_lock()  # type: ignore[attr-defined]

    def _rollback(self) -> None:
        for table in self._tables.values():
            table.pending.clear()
        if self._tables:
            self.audit.pending_order.clear()  # type: ignore[attr-defined]
            self.audit.release_sequence()  # type: ignore[attr-defined]
            self.limits.release_lock()  # type: ignore[attr-defined]

    def _close(self) -> None:
        self._tables = {}


class MemoryUnitOfWorkFactory(storage.UnitOfWorkFactory):
    """Makes units of work over one shared store (what the container provides)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()

    def __call__(self) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self.store)

    def read(self) -> MemoryUnitOfWork:
        """A unit of work for reading only."""
        return MemoryUnitOfWork(self.store, read_only=True)
