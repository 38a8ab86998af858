"""Following our withdrawals on the chain until it settles them; keeping them alive meanwhile.

Each monitor tick: read the unsettled withdrawals (short unit of work); ask the node what
became of their transactions, which wallet spends since the last tick are ours (a signed
PSBT can be broadcast by anyone, from any recorded state) and which are not (a spend that
is none of our withdrawals is reported, and the withdrawals whose coins it took are
conflicted); apply the domain's rules (domain/withdrawal_tracking.py); re-submit what the
mempool lost, with backoff; alert once about a transaction unconfirmed too long, with the
fee rate that would confirm it now; then commit every move, its events and the cursor in
one unit of work, refused if another tracker moved first.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Awaitable, Callable, Sequence

import attrs

from kaccy_bitcoin.application.providers import resolved
from kaccy_bitcoin.application.retry import retried
from kaccy_bitcoin.domain.addresses import MonitorCursor
from kaccy_bitcoin.domain.bitcoin import Network, Txid, spent_outpoints
from kaccy_bitcoin.domain.chain import Direction, WalletEntry
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.domain.psbt import finalize_psbt
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.withdrawal_tracking import ForeignSpend, Verdicts, apply_chain, families
from kaccy_bitcoin.domain.withdrawals import Withdrawal
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.storage import UnitOfWork, UnitOfWorkFactory

CURSOR = "withdrawals"


@attrs.frozen
class TrackerSettings:
    network: Network
    first_delay_seconds: float = 30.0
    max_delay_seconds: float = 3600.0
    stuck_after_seconds: float = 6 * 3600.0
    final_confirmations: int = 6
    unsigned_ttl_seconds: float = 24 * 3600.0
    fee_target_blocks: int = 2      # "the fee rate that would confirm it now"


# A step run inside the tracker's unit of work once the withdrawals it moved are saved (e.g.
# moving a consolidation along with its withdrawal); it returns the events of its own moves.
Follower = Callable[[UnitOfWork, dt.datetime], Sequence[DomainEvent]]


class TrackWithdrawals:
    def __init__(self, uow: UnitOfWorkFactory, chain: ChainBackend, clock: Clock,
                 publisher: EventPublisher, settings: TrackerSettings, followers: Sequence[Follower] = ()) -> None:
        self._uow, self._chain, self._clock = uow, chain, clock
        self._publisher, self._settings = publisher, settings
        self._followers = tuple(followers)

    async def __call__(self) -> list[DomainEvent]:
        return await retried(self._tick, on=ConcurrentUpdate, why="another process moved withdrawals during this tick")

    async def _tick(self) -> list[DomainEvent]:
        s = self._settings
        with self._uow.read() as uow:
            cursor = uow.cursors.get(CURSOR)
            watched = uow.withdrawals.unsettled()
            held = uow.reservations.reserved()
        history = await self._chain.wallet_history(cursor.block_hash if cursor else None, s.final_confirmations)
        sends: dict[Txid, list[WalletEntry]] = {}
        for e in history.entries:
            if e.direction is Direction.SEND and e.confirmations >= 0:
                sends.setdefault(e.outpoint.txid, []).append(e)
        known = {w.txid for w in watched if w.txid is not None}
        with self._uow.read() as uow:
            revived = list(uow.withdrawals.by_txids(set(sends) - known).values())
        withdrawals = watched + revived
        ours = known | {w.txid for w in revived}
        strangers = sorted((t for t in sends if t not in ours), key=lambda t: t.value)
        foreign = await self._foreign_spends(strangers, withdrawals, held)
        txids = {w.txid for w in withdrawals if w.txid} | {w.conflicted_by for w in withdrawals if w.conflicted_by}
        views = await self._chain.wallet_transactions(sorted(txids, key=lambda t: t.value))
        now = self._clock.now()
        verdicts = apply_chain(withdrawals, views, foreign, s.final_confirmations, now)
        for w in withdrawals:
            expired = w.expire(now, s.unsigned_ttl_seconds)
            if expired is not None:
                w.settled = True
                verdicts.release.add(w.withdrawal_id)
                verdicts.moved(w, expired)
        await self._keep_alive(verdicts, now)
        events = verdicts.events + [_unexpected_spend(t, sends[t], now) for t in strangers]
        revived_ids = {w.withdrawal_id for w in revived}
        async with self._uow() as uow:
            if uow.cursors.get(CURSOR) != cursor:
                raise ConcurrentUpdate("another tracker committed since this tick started")
            for w in verdicts.changed.values():
                uow.withdrawals.save(w)
            for withdrawal_id in verdicts.release:
                uow.reservations.release(withdrawal_id)
            for w in verdicts.changed.values():
                if w.settled and w.pays_nothing:   # expired, or voided for good: its amount is free again
                    uow.limits.give_back(w.withdrawal_id)
            events.extend(_limits_taken_again(uow, [w for w in verdicts.changed.values()
                                                    if w.withdrawal_id in revived_ids], now))
            for w in verdicts.changed.values():
                if w.withdrawal_id in revived_ids and w.state is not PsbtState.REPLACED:
                    # on the network again: its coins are spent by it, hold whatever is still free
                    current = uow.reservations.reserved()
                    uow.reservations.reserve([op for op in w.outpoints() if op not in current], w.withdrawal_id, now)
            uow.cursors.set(CURSOR, MonitorCursor(history.last_block))
            for follower in self._followers:
                events.extend(follower(uow, now))
            uow.record(events)
            uow.commit()
        committed = uow.committed_events()
        await self._publisher.publish(committed)
        return committed

    async def _foreign_spends(self, strangers: list[Txid], withdrawals: list[Withdrawal],
                              held: dict) -> dict[str, ForeignSpend]:  # noqa: ANN001
        """Which withdrawals lost a coin to a transaction that is none of ours."""
        if not strangers:
            return {}
        holder = dict(held)
        for w in withdrawals:
            for op in w.outpoints():
                holder.setdefault(op, w.withdrawal_id)
        views = await self._chain.wallet_transactions(strangers)
        found: dict[str, ForeignSpend] = {}
        for txid in strangers:
            view = views.get(txid)
            depth = view.confirmations if view is not None else 0
            for op in spent_outpoints(await self._chain.raw_transaction(txid)):
                if op in holder:
                    found[holder[op]] = ForeignSpend(txid, depth)
        return found

    async def _keep_alive(self, verdicts: Verdicts, now) -> None:  # noqa: ANN001
        s = self._settings
        alive = {w.withdrawal_id for w in verdicts.waiting}
        for family in families(verdicts.lost_from_mempool + verdicts.waiting):
            if any(w.withdrawal_id in alive for w in family):
                continue   # a member is waiting in the mempool: that one is kept alive
            for w in family:
                changed = False
                if w.rebroadcast_due(now, s.first_delay_seconds, s.max_delay_seconds):
                    _, raw, _ = finalize_psbt(s.network, w.psbt)
                    accept = await self._chain.test_accept(raw)
                    if accept.allowed:
                        await self._chain.broadcast(raw)
                    w.record_rebroadcast(now)
                    changed = True
                if w.stuck(now, s.stuck_after_seconds):
                    verdicts.events.append(w.event("withdrawal_stuck", now, in_mempool=False,
                                                   rebroadcasts=w.rebroadcasts,
                                                   suggested_fee_rate_sat_vb=await self._suggested_rate()))
                    changed = True
                if changed:
                    verdicts.moved(w)
        for w in verdicts.waiting:
            if w.stuck(now, s.stuck_after_seconds):
                entry = await self._chain.mempool_entry(w.txid) if w.txid else None
                paying = FeeRate(entry.fee.value * 1000 // entry.vsize) if entry else None
                verdicts.moved(w, w.event("withdrawal_stuck", now, in_mempool=True, rebroadcasts=w.rebroadcasts,
                                          fee_rate_sat_vb=str(paying.sat_per_vb) if paying else None,
                                          suggested_fee_rate_sat_vb=await self._suggested_rate()))

    async def _suggested_rate(self) -> str:
        """The fee rate that would confirm a transaction now (the node's estimate, or its floor)."""
        estimate = await self._chain.estimate_fee(self._settings.fee_target_blocks)
        floor = (await self._chain.mempool_info()).min_fee
        rate = max(estimate.rate, floor) if estimate.rate is not None else floor
        return str(rate.sat_per_vb)


def _limits_taken_again(uow: UnitOfWork, revived: Sequence[Withdrawal], now) -> list[DomainEvent]:  # noqa: ANN001
    """A withdrawal whose amount went back to the limits (cancelled, expired, voided) and whose
    transaction reached the network after all (its PSBT signed and sent elsewhere): the amount
    counts again, and `limit_breached` tells the operators it was paid without the limits' check."""
    events = []
    for w in revived:
        if w.state in (PsbtState.BROADCAST, PsbtState.CONFIRMED, PsbtState.COMPLETED) and \
                uow.limits.take_again(w.withdrawal_id):
            events.append(w.event("limit_breached", now, user=w.user,
                                  reason="its amount had been given back to the limits, and its transaction "
                                         "reached the network after all"))
    return events


def _unexpected_spend(txid: Txid, entries: list[WalletEntry], now) -> DomainEvent:  # noqa: ANN001
    """Coins left the wallet in a transaction that is none of our withdrawals: an alert."""
    return DomainEvent(f"unexpected_spend:{txid.value}", "unexpected_spend", txid.value, now,
                       {"txid": txid.value, "amount_sat": sum(e.amount.value for e in entries)})


class MonitorTick:
    """One round of the service: the payment poll, following the withdrawals, then (when LND is
    configured) looking up the Lightning invoices still open (`lightning` makes the invoice
    sync of application/lightning_invoices.py, possibly awaitably), then any further steps
    (`more`, e.g. proposing a consolidation)."""

    def __init__(self, poll: Callable[[], Awaitable[list[DomainEvent]]],
                 track: Callable[[], Awaitable[list[DomainEvent]]],
                 lightning: Callable[[], Any] | None = None,
                 more: Sequence[Callable[[], Awaitable[list[DomainEvent]]]] = ()) -> None:
        self._poll = poll
        self._track = track
        self._lightning = lightning
        self._more = tuple(more)

    async def __call__(self) -> list[DomainEvent]:
        events = await self._poll()
        events += await self._track()
        if self._lightning is not None:
            sync = await resolved(self._lightning())
            events += await sync.poll()
        for step in self._more:
            events += await step()
        return events
