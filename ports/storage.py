"""Storage ports: one repository per aggregate, and the unit of work that commits them together.

Repository methods are synchronous and run inside a unit of work; nothing a
repository writes is visible to others until `UnitOfWork.commit()`.
"""
from __future__ import annotations

import abc
import datetime as dt

import attrs
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from kaccy_bitcoin.domain.addresses import AddressEntry, MonitorCursor
from kaccy_bitcoin.domain.audit import AuditEntry
from kaccy_bitcoin.domain.consolidation import Consolidation
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.events import DomainEvent, StoredEvent
from kaccy_bitcoin.domain.limits import Limits, Usage
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.lightning_payouts import LightningPayout
from kaccy_bitcoin.domain.orders import OutputStatus, Payment, PaymentRequest
from kaccy_bitcoin.domain.wallets import Wallet
from kaccy_bitcoin.domain.withdrawals import Withdrawal

if TYPE_CHECKING:   # domain/swaps.py loads python-bitcointx: only the swap commands need it
    from kaccy_bitcoin.domain.payjoin_session import PayjoinSession
    from kaccy_bitcoin.domain.swaps import Swap


@attrs.frozen


class StoredOutput:
    """The stored view of one received output, enough to tell whether the chain changed it."""

    order_id: str
    confirmations: int
    status: OutputStatus
    block_hash: str | None


class PaymentRequestRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, request: PaymentRequest) -> None:
        """Store a new order; its id and address must both be new."""

    @abc.abstractmethod
    def get(self, order_id: str) -> PaymentRequest | None:
        """The order with this id, if any."""

    @abc.abstractmethod
    def get_many(self, order_ids: Iterable[str]) -> dict[str, PaymentRequest]:
        """Orders by id for those of `order_ids` that exist (one query, not one per id)."""

    @abc.abstractmethod
    def by_addresses(self, addresses: Iterable[str]) -> dict[str, PaymentRequest]:
        """Orders keyed by address, for those of `addresses` that belong to one (indexed lookup)."""

    @abc.abstractmethod
    def by_checkout_token(self, token: str) -> PaymentRequest | None:
        """The order whose checkout page this token opens, if any (indexed lookup)."""

    @abc.abstractmethod
    def expiring(self, now: dt.datetime) -> list[PaymentRequest]:
        """Orders whose expiry has passed and whose payment is still PENDING."""

    @abc.abstractmethod
    def search(self, *, state: str | None = None, label: str | None = None, after: str | None = None,
               limit: int = 100) -> list[PaymentRequest]:
        """At most `limit` orders by order id, those above `after` (keyset paging), whose payment
        is in `state` (a PaymentState name) and whose label is `label`, when given."""


class PaymentRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, order_id: str) -> Payment | None:
        """The payment (received outputs and state) of an order."""

    @abc.abstractmethod
    def get_many(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        """Payments by order id for those of `order_ids` that exist (one query, not one per id)."""

    @abc.abstractmethod
    def save(self, payments: Sequence[Payment]) -> None:
        """Insert or update payments and all of their outputs."""

    @abc.abstractmethod
    def unsettled_outputs(self) -> dict[OutPoint, StoredOutput]:
        """Outputs that still count for a payment whose state is not terminal, as stored."""

    @abc.abstractmethod
    def by_outpoints(self, outpoints: Iterable[OutPoint]) -> dict[OutPoint, StoredOutput]:
        """What is stored about each known output among `outpoints` (its order, depth, status)."""


class WithdrawalRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, withdrawal_id: str) -> Withdrawal | None:
        """A withdrawal by id."""

    @abc.abstractmethod
    def save(self, withdrawal: Withdrawal) -> None:
        """Insert a new withdrawal (version 0) or update one, only if its stored version is still
        `withdrawal.version` (else ConcurrentUpdate: another writer changed it since it was read);
        bumps `withdrawal.version`."""

    @abc.abstractmethod
    def in_states(self, states: Sequence[str]) -> list[Withdrawal]:
        """Withdrawals whose PSBT state name is one of `states`."""

    @abc.abstractmethod
    def unsettled(self) -> list[Withdrawal]:
        """Withdrawals whose fate the chain has not settled yet, oldest first."""

    @abc.abstractmethod
    def by_txids(self, txids: Iterable[Txid]) -> dict[Txid, Withdrawal]:
        """The withdrawals whose transaction has one of these ids."""


class InvoiceRepository(abc.ABC):
    """Lightning invoices issued for orders."""

    @abc.abstractmethod
    def add(self, invoice: OrderInvoice) -> None:
        """Store a new invoice (version 0); its payment hash must be new (else ConcurrentUpdate)."""

    @abc.abstractmethod
    def save(self, invoice: OrderInvoice) -> None:
        """Update an invoice, only if its stored version is still `invoice.version` (else
        ConcurrentUpdate); bumps `invoice.version`."""

    @abc.abstractmethod
    def get(self, payment_hash: str) -> OrderInvoice | None:
        """The invoice with this payment hash, if it is ours."""

    @abc.abstractmethod
    def by_hashes(self, payment_hashes: Iterable[str]) -> dict[str, OrderInvoice]:
        """Ours among these payment hashes (one query, not one per hash)."""

    @abc.abstractmethod
    def for_order(self, order_id: str) -> list[OrderInvoice]:
        """The order's invoices, newest first."""

    @abc.abstractmethod
    def open(self) -> list[OrderInvoice]:
        """Invoices LND may still settle (OPEN or PENDING), oldest first."""

    @abc.abstractmethod
    def for_orders(self, order_ids: Iterable[str]) -> dict[str, OrderInvoice]:
        """The newest invoice of each of these orders that has one."""


class AddressBook(abc.ABC):
    @abc.abstractmethod
    def allocate(self, chain: int) -> int:
        """Hand out the next unused index of a chain; an index is never handed out twice."""

    @abc.abstractmethod
    def issued(self, chain: int) -> int:
        """How many indexes of this chain have been handed out."""

    @abc.abstractmethod
    def record(self, entry: AddressEntry) -> None:
        """Insert or update an address and its labels."""

    @abc.abstractmethod
    def get(self, address: str) -> AddressEntry | None:
        """The entry for an address, if it is ours."""

    @abc.abstractmethod
    def mark_used(self, addresses: Iterable[str]) -> None:
        """Note that these addresses have received funds."""

    @abc.abstractmethod
    def unused_count(self, chain: int) -> int:
        """Handed-out addresses of this chain that have received nothing yet."""

    @abc.abstractmethod
    def entries(self) -> list[AddressEntry]:
        """Every address, ordered by chain and index."""


class CursorRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, name: str) -> MonitorCursor | None:
        """The named cursor, if one was saved."""

    @abc.abstractmethod
    def set(self, name: str, cursor: MonitorCursor) -> None:
        """Replace the named cursor."""


class AuditLog(abc.ABC):
    """The audit log, which is also the event outbox: every event, numbered in commit order."""

    @abc.abstractmethod
    def append(self, events: Sequence[DomainEvent]) -> list[DomainEvent]:
        """Record events whose ids were never recorded; returns those it recorded.

        Each gets the next sequence number. The numbering is held (a lock on the counter)
        until the transaction ends, so a transaction that took a higher number cannot
        commit before one that took a lower number: a reader never sees seq N+1 while N
        is still to come. The unit of work calls this as it commits, to hold it briefly."""

    @abc.abstractmethod
    def events(self, subject: str | None = None, limit: int = 1000) -> list[DomainEvent]:
        """Recorded events, oldest first, optionally for one subject."""

    @abc.abstractmethod
    def after(self, seq: int, limit: int) -> list[StoredEvent]:
        """At most `limit` committed events whose sequence number is above `seq`, oldest first."""

    @abc.abstractmethod
    def last_seq(self) -> int:
        """The sequence number of the newest committed event; 0 when there is none."""

    @abc.abstractmethod
    def entries(self, subject: str | None = None, since: dt.datetime | None = None,
                after: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Committed entries as stored (with actor and hashes), in seq order, optionally only
        those about `subject`, at or after `since`, above seq `after`, at most `limit`."""

    @abc.abstractmethod
    def handed_out(self) -> int:
        """The highest seq ever handed out (the counter), whatever rows remain: a removed last
        entry shows as a gap between the rows and this."""


class EventConsumers(abc.ABC):
    """Named readers of the event outbox and how far each has acknowledged."""

    @abc.abstractmethod
    def acknowledged(self, name: str) -> int:
        """The highest sequence number the consumer acknowledged; 0 for a new consumer."""

    @abc.abstractmethod
    def acknowledge(self, name: str, seq: int, at: dt.datetime) -> int:
        """Note that the consumer processed every event up to `seq`; never moves backwards
        (a lower `seq` than already acknowledged changes nothing). Returns the stored value."""


class CoinReservations(abc.ABC):
    """Coins held by a withdrawal in progress; the database guarantees one holder per coin,
    across processes."""

    @abc.abstractmethod
    def reserve(self, outpoints: Sequence[OutPoint], withdrawal_id: str, at: dt.datetime,
                shared_with: Iterable[str] = ()) -> None:
        """Hold all of these coins for the withdrawal, or none (CoinsReserved if one is taken).
        A coin already held by one of `shared_with` (the withdrawal it replaces, and that one's
        family) stays with its holder: a replacement holds only the coins it adds."""

    @abc.abstractmethod
    def release(self, withdrawal_id: str) -> None:
        """Free every coin the withdrawal held."""

    @abc.abstractmethod
    def reserved(self) -> dict[OutPoint, str]:
        """Every held coin and the withdrawal holding it."""


class LimitStore(abc.ABC):
    """Withdrawal limits and what each withdrawal takes from them (domain/limits.py)."""

    @abc.abstractmethod
    def get(self, scope: str) -> Limits | None:
        """The limits of a user (or of `platform`), if any were set."""

    @abc.abstractmethod
    def set(self, limits: Limits, at: dt.datetime) -> None:
        """Store a scope's limits, replacing what was there."""

    @abc.abstractmethod
    def lock(self, scopes: Sequence[str]) -> dict[str, Limits]:
        """The limits of these scopes, each scope's row locked until the transaction ends, in
        the order given (callers give `platform` first): the check-and-take of two withdrawals
        of one scope runs one after the other, in any process."""

    @abc.abstractmethod
    def user_usage(self, user: str, since: dt.datetime) -> list[Usage]:
        """The user's withdrawals made at or after `since` (returned ones too), oldest first."""

    @abc.abstractmethod
    def platform_usage(self, since: dt.datetime) -> list[Usage]:
        """Every withdrawal made at or after `since` (returned ones too), oldest first."""

    @abc.abstractmethod
    def take(self, usage: Usage) -> None:
        """Record what a new withdrawal takes from the limits."""

    @abc.abstractmethod
    def give_back(self, withdrawal_id: str) -> None:
        """The withdrawal pays nothing: its amount no longer counts (idempotent)."""

    @abc.abstractmethod
    def adjust(self, withdrawal_id: str, amount_sat: int) -> None:
        """What the payout turned out to pay (a Lightning payout's fee, once known): its
        claim counts `amount_sat` from now on, never more than it took."""

    @abc.abstractmethod
    def take_again(self, withdrawal_id: str) -> bool:
        """A withdrawal whose amount was given back pays after all (a cancelled one's PSBT signed
        and sent elsewhere): its amount counts again. True if it had been given back."""


class LightningPayoutRepository(abc.ABC):
    """Payouts over Lightning (domain/lightning_payouts.py)."""

    @abc.abstractmethod
    def add(self, payout: LightningPayout) -> None:
        """Store a new payout (version 0 -> 1); its id must be new."""

    @abc.abstractmethod
    def save(self, payout: LightningPayout) -> None:
        """Update a payout, only if its stored version is still `payout.version` (else
        ConcurrentUpdate); bumps `payout.version`."""

    @abc.abstractmethod
    def get(self, payment_id: str) -> LightningPayout | None:
        """The payout with this id."""

    @abc.abstractmethod
    def for_hash(self, payment_hash: str) -> list[LightningPayout]:
        """Every payout of this payment hash, oldest first."""


class WalletRepository(abc.ABC):
    """The wallets added besides `default` (which KACCY_XPUB configures and is not stored)."""

    @abc.abstractmethod
    def add(self, wallet: Wallet) -> None:
        """Store a new wallet; ConcurrentUpdate if its name, number or definition is taken
        (another writer added one since this unit of work looked)."""

    @abc.abstractmethod
    def get(self, name: str) -> Wallet | None:
        """The wallet of that name."""

    @abc.abstractmethod
    def by_definition(self, definition: str) -> Wallet | None:
        """The wallet whose `Wallet.definition()` (threshold and keys) this is."""

    @abc.abstractmethod
    def by_number(self, number: int) -> Wallet | None:
        """The wallet of that number."""

    @abc.abstractmethod
    def all(self) -> list[Wallet]:
        """Every stored wallet, by number."""

    @abc.abstractmethod
    def next_number(self) -> int:
        """The number the next added wallet takes (1 when none is stored; 0 is `default`)."""


class ConsolidationRepository(abc.ABC):
    """Each wallet's consolidation machine (one row per wallet)."""

    @abc.abstractmethod
    def get(self, wallet: str) -> Consolidation | None:
        """The wallet's consolidation, if it ever had one."""

    @abc.abstractmethod
    def save(self, consolidation: Consolidation) -> None:
        """Insert (version 0) or update it, only if its stored version is still
        `consolidation.version` (else ConcurrentUpdate); bumps `consolidation.version`."""

    @abc.abstractmethod
    def in_flight(self) -> list[Consolidation]:
        """Consolidations whose withdrawal exists and whose fate the chain has not decided
        (PLANNED with a withdrawal, or CONSOLIDATING)."""


class SwapRepository(abc.ABC):
    """Atomic swaps (domain/swaps.py), one row each."""

    @abc.abstractmethod
    def get(self, swap_id: str) -> Swap | None:
        """The swap, if it exists."""

    @abc.abstractmethod
    def save(self, swap: Swap) -> None:
        """Insert (version 0) or update it, only if its stored version is still `swap.version`
        (else ConcurrentUpdate); bumps `swap.version`."""

    @abc.abstractmethod
    def all(self, state: str | None = None) -> list[Swap]:
        """Every swap (in `state` when given), oldest first."""

    @abc.abstractmethod
    def watching(self) -> list[Swap]:
        """The swaps the monitor still follows (`Swap.watching`), oldest first."""


class PayjoinRepository(abc.ABC):
    """PayJoin receiving sessions (domain/payjoin_session.py), one per order, and every input
    an original ever offered (BIP78's defence against probing)."""

    @abc.abstractmethod
    def add(self, session: PayjoinSession) -> None:
        """Store a new session (ConcurrentUpdate if its order or token has one already)."""

    @abc.abstractmethod
    def save(self, session: PayjoinSession) -> None:
        """Write a changed session; ConcurrentUpdate if another unit of work changed it since it was read."""

    @abc.abstractmethod
    def get(self, token: str) -> PayjoinSession | None:
        """The session of a `pj=` token."""

    @abc.abstractmethod
    def for_orders(self, order_ids: Iterable[str]) -> dict[str, PayjoinSession]:
        """The sessions of these orders, by order id."""

    @abc.abstractmethod
    def by_proposal_txids(self, txids: Iterable[Txid]) -> dict[Txid, PayjoinSession]:
        """The sessions whose proposal has one of these txids."""

    @abc.abstractmethod
    def open(self) -> list[PayjoinSession]:
        """Sessions with a proposal whose coin is not released yet, oldest first."""

    @abc.abstractmethod
    def seen_inputs(self, outpoints: Iterable[OutPoint]) -> set[OutPoint]:
        """Those of `outpoints` an earlier original offered."""

    @abc.abstractmethod
    def record_inputs(self, outpoints: Sequence[OutPoint], token: str) -> None:
        """Note the inputs of an original (ConcurrentUpdate if one was noted meanwhile)."""


class Analytics(abc.ABC):
    """Totals for `kaccy-bitcoin stats` that no aggregate holds."""

    @abc.abstractmethod
    def received(self) -> tuple[int, int]:
        """(count, total sat) of the received outputs that count for an order and have at
        least one confirmation."""

    @abc.abstractmethod
    def received_since(self, since: dt.datetime) -> list[tuple[dt.datetime, int]]:
        """(first seen, sat) of each of those outputs first seen at or after `since`."""


class UnitOfWork(abc.ABC):
    """A transaction over every repository: all of it commits, or none of it does.

    Use as `with uow:` or `async with uow:`; leaving the block without `commit()` rolls back.
    `async with` waits for the transaction's write lock (if any) off the event loop, so
    async code never stalls behind another process's writes; once in, the block holds it.
    Events recorded through `record()` are appended to the audit log (the outbox) by
    `commit()`, in the same transaction and just before it commits, so the lock that
    numbers them is held only for the commit itself; duplicates by id are skipped, and
    `committed_events()` hands out those the commit made durable.
    """

    requests: PaymentRequestRepository
    payments: PaymentRepository
    withdrawals: WithdrawalRepository
    invoices: InvoiceRepository
    ln_payouts: LightningPayoutRepository
    addresses: AddressBook
    cursors: CursorRepository
    audit: AuditLog
    consumers: EventConsumers
    reservations: CoinReservations
    limits: LimitStore
    wallets: WalletRepository
    consolidations: ConsolidationRepository
    swaps: SwapRepository
    payjoins: PayjoinRepository
    analytics: Analytics

    def __init__(self) -> None:
        self._recorded: list[DomainEvent] = []
        self._committed: list[DomainEvent] = []
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once the next `commit()` has made this transaction durable (not
        if it rolls back)."""
        self._after_commit.append(callback)

    def record(self, events: Iterable[DomainEvent]) -> None:
        """Have `commit()` write these events to the audit log (once per id)."""
        self._recorded.extend(events)

    def committed_events(self) -> list[DomainEvent]:
        """Events that the last commit made durable (to publish now)."""
        events, self._committed = self._committed, []
        return events

    def commit(self) -> None:
        first: dict[str, DomainEvent] = {}
        for event in self._recorded:
            first.setdefault(event.id, event)
        written = self.audit.append(list(first.values())) if first else []
        self._commit()
        self._committed.extend(written)
        self._recorded = []
        after, self._after_commit = self._after_commit, []
        for callback in after:
            callback()

    def rollback(self) -> None:
        self._recorded = []
        self._after_commit = []
        self._rollback()

    @abc.abstractmethod
    def _begin(self) -> None:
        """Start a transaction and bind the repositories to it."""

    @abc.abstractmethod
    def _commit(self) -> None:
        """Make everything written durable, atomically."""

    @abc.abstractmethod
    def _rollback(self) -> None:
        """Discard everything written since `_begin`."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the transaction's resources."""

    def __enter__(self) -> UnitOfWork:
        self._recorded = []
        self._after_commit = []
        self._begin()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.rollback()
        finally:
            self._close()

    async def __aenter__(self) -> UnitOfWork:
        self._recorded = []
        self._after_commit = []
        await self._begin_async()
        return self

    async def _begin_async(self) -> None:
        """`_begin` for `async with`: an adapter whose beginning may wait (for a write lock, a
        pooled connection) does that waiting off the event loop."""
        self._begin()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)


class UnitOfWorkFactory(abc.ABC):
    """Makes the units of work of one store (what the use cases are given)."""

    @abc.abstractmethod
    def __call__(self) -> UnitOfWork:
        """A unit of work that may write."""

    @abc.abstractmethod
    def read(self) -> UnitOfWork:
        """A unit of work for reading only: it cannot commit, and on SQLite it takes no write
        lock, so it never makes a writer wait."""
