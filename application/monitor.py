"""The payment monitor: one poll of the watch wallet, committed as one unit of work.

A poll reads the wallet's history since the persisted cursor, re-checks every output
that still counts for an unsettled order (and anything the history marks as removed
or conflicted), applies what the chain says to each order's Payment, and commits the
payments, the emitted events and the new cursor together. A crash anywhere before the
commit leaves the previous cursor in place, so the next poll sees the same facts again;
outputs are keyed by outpoint, so seeing them again changes nothing.

No unit of work is open while the poll waits on the node (on SQLite a writing one would
hold the database's write lock, and every `order create` would wait for the node too):

1. read, in read-only units of work: the cursor and the poll counter, then (on a worker
   thread, while the node builds its `listsinceblock` answer) the unsettled outputs;
2. ask the node (history, mempool, re-checks) with nothing open;
3. write, in one unit of work: if the cursor or the counter moved, another monitor
   committed since step 1 and the poll raises ConcurrentUpdate (it is polled again);
   otherwise nothing that step 1 read has changed, because every committed poll bumps the
   counter and polls are the only writers of received outputs. The payments to change are
   loaded there (their versions guard the writes), changed, and committed with the events,
   the new cursor and the bumped counter.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Iterable

import attrs

from kaccy_bitcoin.domain.addresses import MonitorCursor
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.chain import Direction, WalletEntry, WalletTransaction
from kaccy_bitcoin.domain.errors import ConcurrentUpdate, MonitorPollFailed
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.orders import OutputObservation, OutputStatus, Payment, unknown_address_event
from kaccy_bitcoin.application.retry import retried
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.application.zeroconf import ScoreUnconfirmed
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend, NodeSet
from kaccy_bitcoin.ports.chain_notifications import ChainNotifications
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.storage import StoredOutput, UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)
CURSOR = "payments"
POLLS = "payments:polls"   # its `height` counts the committed polls (block_hash unused)


@attrs.define
class _Verdict:
    """What this poll concluded about one output paying one of our addresses."""

    address: str
    seen: OutputObservation | None = None
    gone: OutputStatus | None = None
    replaced_by: Txid | None = None


class PollPayments:
    """Run one monitor poll; returns the events it committed."""

    phase = "payments"

    def __init__(self, uow: UnitOfWorkFactory, chain: ChainBackend, clock: Clock,
                 publisher: EventPublisher, settings: PaymentSettings, nodes: NodeSet | None = None) -> None:
        self._nodes = nodes   # several nodes: none finalizes a payment while they disagree
        self._uow = uow
        self._chain = chain
        self._clock = clock
        self._publisher = publisher
        self._settings = settings
        self._score = ScoreUnconfirmed(chain, settings.zeroconf)

    async def __call__(self) -> list[DomainEvent]:
        # Another monitor committed the same payments first; its work is durable, so reading
        # again from its cursor sees everything (and counts nothing twice).
        return await retried(self._poll, on=ConcurrentUpdate, why="another writer changed payments during this poll")

    async def _poll(self) -> list[DomainEvent]:
        final = self._settings.thresholds.final
        with self._uow.read() as uow:
            started = (uow.cursors.get(CURSOR), uow.cursors.get(POLLS))
        cursor, polls = started
        # The node builds its answer on its own core; meanwhile a worker thread reads what is
        # stored about the unsettled payments, in its own read-only unit of work.
        reading = asyncio.get_running_loop().run_in_executor(None, self._unsettled)
        try:
            history = await self._chain.wallet_history(cursor.block_hash if cursor else None, final)
        except BaseException:
            await asyncio.wait([reading])
            raise
        unsettled = await reading
        verdicts = await self._judge(history.entries, history.removed, unsettled)
        await self._score_new(verdicts, unsettled)
        thresholds, zeroconf = self._settings.thresholds, self._settings.zeroconf
        if self._nodes is not None and await self._nodes.finality_held():
            # The nodes disagree on the chain: nothing final, and nothing accepted before it
            # confirms on what one side's mempool says (the very case a 0-conf attacker makes).
            thresholds, zeroconf = thresholds.held(), None
        async with self._uow() as uow:
            if (uow.cursors.get(CURSOR), uow.cursors.get(POLLS)) != started:
                raise ConcurrentUpdate("another monitor committed a poll while this one was asking the node")
            now = self._clock.now()
            self._apply(uow, verdicts, unsettled, now, thresholds, zeroconf)
            uow.cursors.set(CURSOR, MonitorCursor(history.last_block))
            uow.cursors.set(POLLS, MonitorCursor("", (polls.height or 0) + 1 if polls else 1))
            uow.commit()
        events = uow.committed_events()
        await self._publisher.publish(events)
        return events

    def _unsettled(self) -> dict[OutPoint, StoredOutput]:
        """The outputs that still count for unsettled payments, as stored."""
        with self._uow.read() as uow:
            return uow.payments.unsettled_outputs()

    async def _judge(self, entries: Iterable[WalletEntry], removed: Iterable[WalletEntry],
                     unsettled: Iterable[OutPoint]) -> dict[OutPoint, _Verdict]:
        verdicts: dict[OutPoint, _Verdict] = {}
        recheck: set[Txid] = {e.outpoint.txid for e in removed if e.direction is Direction.RECEIVE}
        trusted: set[Txid] = set()
        unconfirmed: list[WalletEntry] = []
        for e in entries:
            if e.direction is not Direction.RECEIVE or e.address is None:
                continue
            v = verdicts.setdefault(e.outpoint, _Verdict(e.address))
            if e.abandoned or e.confirmations < 0:
                recheck.add(e.outpoint.txid)
            elif e.confirmations > 0:
                v.seen = OutputObservation(e.outpoint, e.amount, e.confirmations, e.block_hash, e.first_seen)
                trusted.add(e.outpoint.txid)
            else:
                unconfirmed.append(e)
        # An unconfirmed entry the mempool still holds is live as listed (the mempool holds no
        # conflicts); one it does not hold was replaced, double-spent or evicted: re-check it.
        live = await self._chain.in_mempool(sorted({e.outpoint.txid for e in unconfirmed}, key=_txid_key))
        for e in unconfirmed:
            if e.outpoint.txid in live:
                verdicts[e.outpoint].seen = OutputObservation(e.outpoint, e.amount, 0, None, e.first_seen)
                trusted.add(e.outpoint.txid)
            else:
                recheck.add(e.outpoint.txid)
        for outpoint in unsettled:
            if outpoint.txid not in trusted:
                recheck.add(outpoint.txid)
                verdicts.setdefault(outpoint, _Verdict(""))
        recheck -= trusted
        if not recheck:
            return verdicts
        views = await self._chain.wallet_transactions(sorted(recheck, key=_txid_key))
        rivals = {c for v in views.values() if v is not None and v.confirmations <= 0 and not v.in_mempool
                  for c in (*v.wallet_conflicts, *v.mempool_conflicts, *([v.replaced_by] if v.replaced_by else []))}
        rivals -= views.keys()
        if rivals:
            views.update(await self._chain.wallet_transactions(sorted(rivals, key=_txid_key)))
        undecided = await self._wallet_lag(views)
        pays: dict[Txid, set[str]] = {
            t: {r.address for r in v.receives if r.address} for t, v in views.items() if v is not None}
        for e in entries:
            if e.direction is Direction.RECEIVE and e.address:
                pays.setdefault(e.outpoint.txid, set()).add(e.address)
        outpoints: dict[Txid, list[OutPoint]] = {}
        for op in verdicts:
            outpoints.setdefault(op.txid, []).append(op)
        for txid in recheck - undecided:
            self._judge_tx(txid, views.get(txid), verdicts, pays, outpoints.get(txid, []))
        return verdicts

    async def _score_new(self, verdicts: dict[OutPoint, _Verdict], unsettled: dict[OutPoint, StoredOutput]) -> None:
        """Give every output seen unconfirmed and not yet counted its zero-conf risk, as it is now."""
        fresh = {op: v.seen.amount for op, v in verdicts.items()
                 if v.seen is not None and v.seen.confirmations == 0 and op not in unsettled}
        for op, risk in (await self._score(fresh)).items():
            verdicts[op].seen = attrs.evolve(verdicts[op].seen, zeroconf_risk=risk)

    async def _wallet_lag(self, views: dict[Txid, WalletTransaction | None]) -> set[Txid]:
        """The transactions nothing can be concluded about this poll, because the node's wallet
        has not taken in every block yet.

        A transaction the wallet lists unconfirmed and the mempool no longer holds was replaced,
        double-spent or evicted, or mined in a block the node connected (dropping it from the
        mempool) and has not handed to its wallet yet. Only a wallet that has caught up tells
        these apart: if it has (asked after the mempool look-ups), those transactions are read
        again, and the new answers cover that block; if it has not, they wait for the next poll.
        """
        gone = [t for t, v in views.items() if v is not None and v.confirmations == 0 and not v.in_mempool]
        if not gone:
            return set()
        if not await self._chain.wallet_synced():
            log.info("the node's wallet has not taken in its last block yet: %d transaction(s) left "
                     "to the next poll", len(gone))
            return set(gone)
        views.update(await self._chain.wallet_transactions(sorted(gone, key=_txid_key)))
        return set()

    @staticmethod
    def _judge_tx(txid: Txid, view: WalletTransaction | None, verdicts: dict[OutPoint, _Verdict],
                  pays: dict[Txid, set[str]], mine: list[OutPoint]) -> None:
        if view is None:
            for op in mine:
                verdicts[op].gone = OutputStatus.REORGED_OUT
            return
        for r in view.receives:
            if r.address:
                verdicts.setdefault(r.outpoint, _Verdict(r.address)).address = r.address
                if r.outpoint not in mine:
                    mine.append(r.outpoint)
        receives = {r.outpoint: r for r in view.receives}
        live = view.confirmations > 0 or (view.confirmations == 0 and view.in_mempool)
        for op in mine:
            v = verdicts[op]
            if live and op in receives:
                v.seen = OutputObservation(op, receives[op].amount, view.confirmations, view.block_hash,
                                           receives[op].first_seen)
                v.gone = None
                continue
            v.seen = None
            rivals = [*([view.replaced_by] if view.replaced_by else []), *view.mempool_conflicts,
                      *view.wallet_conflicts]
            same_payee = [r for r in rivals if v.address and v.address in pays.get(r, set())]
            if same_payee:
                v.gone, v.replaced_by = OutputStatus.REPLACED, same_payee[0]
            elif rivals or view.confirmations < 0:
                # Negative confirmations: a transaction spending the same coins is in the chain, though
                # not one the watch wallet holds (it pays someone else, so the wallet cannot name it).
                v.gone = OutputStatus.DOUBLE_SPENT
            else:
                v.gone = OutputStatus.REORGED_OUT

    def _apply(self, uow: UnitOfWork, verdicts: dict[OutPoint, _Verdict],
               unsettled: dict[OutPoint, StoredOutput], now, thresholds, zeroconf) -> None:  # noqa: ANN001
        stored = uow.payments.by_outpoints([op for op in verdicts if op not in unsettled])
        stored.update((op, unsettled[op]) for op in verdicts if op in unsettled)
        # An output the chain reports exactly as stored changes nothing: skip it before
        # loading its payment, so a quiet poll costs one indexed query.
        verdicts = {op: v for op, v in verdicts.items() if op not in stored or _changes(v, stored[op])}
        unknown_owner = {v.address for op, v in verdicts.items() if op not in stored and v.address}
        by_address = uow.requests.by_addresses(unknown_owner)
        owner: dict[OutPoint, str] = {}
        events: list[DomainEvent] = []
        for op, v in verdicts.items():
            request = by_address.get(v.address)
            order_id = stored[op].order_id if op in stored else (request.order_id if request else None)
            if order_id is not None:
                owner[op] = order_id
            elif v.seen is not None and uow.addresses.get(v.address) is None:
                events.append(unknown_address_event(v.address, v.seen, now))
        # A payjoin's output to the order holds our coin's value too: the order counts the customer's part.
        joined = uow.payjoins.by_proposal_txids({op.txid for op, v in verdicts.items() if v.seen and op in owner})
        for op, v in verdicts.items():
            session = joined.get(op.txid)
            if session is not None and v.seen is not None and owner.get(op) == session.order_id:
                v.seen = session.customer_share(v.seen)
        expiring = uow.requests.expiring(now)
        order_ids = set(owner.values()) | {r.order_id for r in expiring}
        requests = {r.order_id: r for r in by_address.values()}
        requests.update(uow.requests.get_many(order_ids - requests.keys()))
        payments = uow.payments.get_many(order_ids)
        for order_id in order_ids - payments.keys():
            payments[order_id] = Payment(order_id)

        used: set[str] = set()
        # Departures first, then arrivals, each in outpoint order: the same facts give the same events.
        for op, v in sorted(verdicts.items(), key=lambda kv: (kv[1].gone is None, kv[0].txid.value, kv[0].vout)):
            order_id = owner.get(op)
            if order_id is None:
                continue
            if v.seen is not None:
                if op not in stored:
                    used.add(requests[order_id].address)
                payments[order_id].observe(requests[order_id], v.seen, now)
            elif v.gone is not None:
                payments[order_id].withdraw(requests[order_id], op, v.gone, now, v.replaced_by)
        for request in expiring:
            payments[request.order_id].expire(request, now)
        for order_id, payment in payments.items():
            payment.settle(requests[order_id], thresholds, now, zeroconf)
            events.extend(payment.take_events())
        uow.payments.save(list(payments.values()))   # the repository writes only what changed
        uow.record(events)
        if used:
            uow.addresses.mark_used(used)


def _txid_key(txid: Txid) -> str:
    return txid.value


def _changes(verdict: _Verdict, stored: StoredOutput) -> bool:
    if verdict.seen is not None:
        return (stored.status is not OutputStatus.ACTIVE or stored.confirmations != verdict.seen.confirmations
                or stored.block_hash != verdict.seen.block_hash)
    return verdict.gone is not None and stored.status is OutputStatus.ACTIVE


class RunMonitor:
    """Poll until `stop` is set: every `interval` seconds, and at once when the node notifies
    something (`wake`). After a notification it polls once more `settle` seconds later, unless
    another notification came first, in case the node's wallet took in a transaction after the
    poll the notification started. Notifications never make polls start closer together than
    `min_gap` seconds (a busy mainnet mempool notifies several times a second). A failed poll is
    retried."""

    def __init__(self, poll: Callable[[], Awaitable[list[DomainEvent]]], interval: float,
                 wake: ChainNotifications | None = None, settle: float = 0.5, min_gap: float = 0.1) -> None:
        self._poll = poll
        self._interval = interval
        self._wake = wake
        self._settle = min(settle, interval)
        self._min_gap = min_gap

    async def __call__(self, on_events: Callable[[list[DomainEvent]], None] | None = None,
                       stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        timeout = self._interval
        while not stop.is_set():
            started = loop.time()
            try:
                events = await self._poll()
                if on_events and events:
                    on_events(events)
            except MonitorPollFailed as exc:   # a phase failed (logged); the others' events count
                if on_events and exc.events:
                    on_events(exc.events)
                log.warning("monitor poll failed in part (%s); retrying in %ss", exc.code, self._interval)
            except Exception:  # noqa: BLE001 - the monitor keeps going; the poll is retried
                log.exception("monitor poll failed; retrying in %ss", self._interval)
            woken = await self._sleep(stop, timeout)
            timeout = self._settle if woken else self._interval
            gap = started + self._min_gap - loop.time()
            if woken and gap > 0:
                await asyncio.sleep(gap)

    async def _sleep(self, stop: asyncio.Event, timeout: float) -> bool:
        """Wait for `stop`, a notification or the timeout; True for a notification."""
        waits = {asyncio.ensure_future(stop.wait())}
        if self._wake is not None:
            # `wait` keeps the timeout itself: cut short, it could swallow a notification it was
            # already handling (read, then waiting for the node's wallets) and report none.
            woken = asyncio.ensure_future(self._wake.wait(timeout))
            waits.add(woken)
        done, pending = await asyncio.wait(waits, timeout=None if self._wake is not None else timeout,
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        if self._wake is None or woken not in done or woken.cancelled():
            return False
        try:
            return bool(woken.result())
        except Exception:  # noqa: BLE001 - a broken subscription leaves the interval poll
            log.exception("waiting for the node's notifications failed; polling every %ss", self._interval)
            self._wake = None
            return False
