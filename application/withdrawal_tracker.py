"""Following our withdrawals on the chain until it settles them; keeping them alive meanwhile.

Each monitor tick: read the unsettled withdrawals (short unit of work); ask the node what
became of their transactions, which wallet spends since the last tick are ours (a signed
PSBT can be broadcast by anyone, from any recorded state) and which are not (a spend that
is none of our withdrawals is reported, and the withdrawals whose coins it took are
conflicted); apply the domain's rules (domain/withdrawal_tracking.py); re-submit what the
mempool lost (the signed transaction the network saw, kept when first seen: a withdrawal
signed and sent elsewhere has no signed PSBT here), with backoff; alert once about a
transaction unconfirmed too long, with the fee rate that would confirm it now; then commit
every move, its events and the cursor in one unit of work, refused if another tracker moved
first. A withdrawal (or a stranger's spend) the tick cannot handle is skipped, logged and
alerted (`monitor_item_failed`, see application/monitor_tick.py); the others move on.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Awaitable, Callable, Sequence

import attrs

from kaccy_bitcoin.application.monitor_tick import ItemFailure, MonitorEvents, skipped
from kaccy_bitcoin.application.retry import retried
from kaccy_bitcoin.domain.addresses import MonitorCursor
from kaccy_bitcoin.domain.bitcoin import Network, Txid, spent_outpoints
from kaccy_bitcoin.domain.chain import Direction, WalletEntry
from kaccy_bitcoin.domain.errors import ConcurrentUpdate, KaccyError
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.domain.payment_state import FINALITY_HELD
from kaccy_bitcoin.domain.psbt import InvalidPsbt, finalize_psbt
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.withdrawal_tracking import ForeignSpend, Verdicts, apply_chain, families
from kaccy_bitcoin.domain.withdrawals import Withdrawal, built_on
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend, NodeSet
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.storage import UnitOfWork, UnitOfWorkFactory

CURSOR = "withdrawals"
PHASE = "withdrawals"
log = logging.getLogger(__name__)


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
    phase = PHASE

    def __init__(self, uow: UnitOfWorkFactory, chain: ChainBackend, clock: Clock,
                 publisher: EventPublisher, settings: TrackerSettings, followers: Sequence[Follower] = (),
                 nodes: NodeSet | None = None) -> None:
        self._nodes = nodes   # several nodes: no withdrawal completes while they disagree
        self._uow, self._chain, self._clock = uow, chain, clock
        self._publisher, self._settings = publisher, settings
        self._followers = tuple(followers)

    async def __call__(self) -> MonitorEvents:
        return await retried(self._tick, on=ConcurrentUpdate, why="another process moved withdrawals during this tick")

    async def _tick(self) -> MonitorEvents:
        s = self._settings
        failed: list[ItemFailure] = []
        with self._uow.read() as uow:
            cursor = uow.cursors.get(CURSOR)
            watched = uow.withdrawals.unsettled()
            held = uow.reservations.reserved()
        history = await self._chain.wallet_history(cursor.block_hash if cursor else None, s.final_confirmations)
        sends: dict[Txid, list[WalletEntry]] = {}
        for e in history.entries:
            if e.direction is Direction.SEND and e.confirmations >= 0:
                sends.setdefault(e.outpoint.txid, []).append(e)
        # A payjoin's original, signed and handed to its receiver, reached the chain or the
        # mempool in place of the proposal we sent: the withdrawal follows it from now on.
        switched = [w for w in watched if w.payjoin is not None and w.payjoin.used
                    and w.payjoin.original_txid in sends and w.txid not in sends]
        for w in switched:
            w.follow_original("original_sent_by_receiver")
        known = {w.txid for w in watched if w.txid is not None}
        with self._uow.read() as uow:
            revived = list(uow.withdrawals.by_txids(set(sends) - known).values())
            # A payjoin we proposed spends a coin of ours too: it is no stranger.
            joined = uow.payjoins.by_proposal_txids(set(sends) - known)
        withdrawals = watched + revived
        ours = known | {w.txid for w in revived} | set(joined)
        strangers = sorted((t for t in sends if t not in ours), key=lambda t: t.value)
        foreign = await self._foreign_spends(strangers, withdrawals, held, failed)
        txids = {w.txid for w in withdrawals if w.txid} | {w.conflicted_by for w in withdrawals if w.conflicted_by}
        views = await self._chain.wallet_transactions(sorted(txids, key=lambda t: t.value))
        now = self._clock.now()
        final = s.final_confirmations
        if self._nodes is not None and await self._nodes.finality_held():
            final = FINALITY_HELD
        verdicts = apply_chain(withdrawals, views, foreign, final, now)
        for w in switched:
            verdicts.moved(w)
        for w in withdrawals:
            expired = w.expire(now, s.unsigned_ttl_seconds)
            if expired is not None:
                w.settled = True
                verdicts.release.add(w.withdrawal_id)
                verdicts.moved(w, expired)
        await self._keep_signed(verdicts, failed)
        await self._keep_alive(verdicts, now, failed, withdrawals)
        for failure in failed:
            failure.log()
        events = (verdicts.events + [_unexpected_spend(t, sends[t], now) for t in strangers]
                  + [f.event(now) for f in failed])
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
        return MonitorEvents(committed, failed)

    async def _foreign_spends(self, strangers: list[Txid], withdrawals: list[Withdrawal],
                              held: dict, failed: list[ItemFailure]) -> dict[str, ForeignSpend]:  # noqa: ANN001
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
            try:
                spent = spent_outpoints(await self._chain.raw_transaction(txid))
            except Exception as exc:  # noqa: BLE001 - this spend is skipped (and alerted); the others go on
                failed.append(skipped(PHASE, txid.value, exc))
                continue
            for op in spent:
                if op in holder:
                    found[holder[op]] = ForeignSpend(txid, depth)
        return found

    async def _keep_signed(self, verdicts: Verdicts, failed: list[ItemFailure]) -> None:
        """Keep the signed transaction of each withdrawal waiting in the mempool that has none
        kept yet (signed and sent elsewhere, or before transactions were kept): the mempool
        has it now."""
        for w in verdicts.waiting:
            if w.signed_tx is None and w.txid is not None:
                try:
                    w.keep_signed(await self._chain.raw_transaction(w.txid))
                except Exception as exc:  # noqa: BLE001 - kept on a later tick, or asked for when needed
                    failed.append(skipped(PHASE, w.withdrawal_id, exc))
                    continue
                verdicts.moved(w)

    async def _signed(self, w: Withdrawal) -> bytes:
        """The transaction to resubmit: the one kept, else the node's copy (its wallet keeps the
        transactions it saw), else our own finalized PSBT."""
        if w.signed_tx is None and w.txid is not None:
            try:
                w.keep_signed(await self._chain.raw_transaction(w.txid))
            except KaccyError as asked:
                try:
                    _, raw, _ = finalize_psbt(self._settings.network, w.psbt)
                except InvalidPsbt:
                    raise asked from None
                w.keep_signed(raw)
        if w.signed_tx is None:
            raise InvalidPsbt(f"withdrawal {w.withdrawal_id} has no transaction to resubmit")
        return bytes.fromhex(w.signed_tx)

    async def _keep_alive(self, verdicts: Verdicts, now, failed: list[ItemFailure],  # noqa: ANN001
                          withdrawals: Sequence[Withdrawal]) -> None:
        alive = {w.withdrawal_id for w in verdicts.waiting}
        for family in families(verdicts.lost_from_mempool + verdicts.waiting):
            if any(w.withdrawal_id in alive for w in family):
                continue   # a member is waiting in the mempool: that one is kept alive
            for w in family:
                if w.superseded(built_on(w, withdrawals)):
                    continue   # a replacement or void took its place: never sent by us again
                await self._alone(w, self._resubmit(w, verdicts, now), failed)
        for w in verdicts.waiting:
            await self._alone(w, self._still_waiting(w, verdicts, now), failed)

    @staticmethod
    async def _alone(w: Withdrawal, step: Awaitable[None], failed: list[ItemFailure]) -> None:
        """Run one withdrawal's step; if it fails, the withdrawal is skipped this tick (its stuck
        alert is not spent on a failed attempt) and the failure reported."""
        alerted = w.stuck_alerted
        try:
            await step
        except Exception as exc:  # noqa: BLE001 - one withdrawal's failure must not stop the others
            w.stuck_alerted = alerted
            failed.append(skipped(PHASE, w.withdrawal_id, exc))

    async def _resubmit(self, w: Withdrawal, verdicts: Verdicts, now) -> None:  # noqa: ANN001
        """A withdrawal the mempool lost: resubmitted when its backoff is due; alerted once stuck."""
        s = self._settings
        changed = False
        if w.rebroadcast_due(now, s.first_delay_seconds, s.max_delay_seconds):
            raw = await self._signed(w)
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

    async def _still_waiting(self, w: Withdrawal, verdicts: Verdicts, now) -> None:  # noqa: ANN001
        if w.stuck(now, self._settings.stuck_after_seconds):
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
