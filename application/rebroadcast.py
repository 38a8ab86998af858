"""Keeping our broadcast withdrawals alive until they confirm or are replaced.

A transaction can leave the mempool without confirming: a one-block reorg makes one
whose anti-fee-sniping locktime equals the old tip non-final, a node restart without a
persisted mempool forgets it, mempool limits evict it. Each tick re-submits such
transactions with exponential backoff and raises `withdrawal_stuck` once for one
unconfirmed longer than the configured time.
"""
from __future__ import annotations

from typing import Callable

import attrs

from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.psbt import finalize_psbt
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.storage import UnitOfWork


@attrs.frozen
class RebroadcastSettings:
    network: Network
    first_delay_seconds: float = 30.0
    max_delay_seconds: float = 3600.0
    stuck_after_seconds: float = 6 * 3600.0
    release_after_confirmations: int = 6
    unsigned_ttl_seconds: float = 24 * 3600.0


class RebroadcastWithdrawals:
    def __init__(self, uow: Callable[[], UnitOfWork], chain: ChainBackend, clock: Clock,
                 publisher: EventPublisher, settings: RebroadcastSettings) -> None:
        self._uow, self._chain, self._clock = uow, chain, clock
        self._publisher, self._settings = publisher, settings

    async def __call__(self) -> list[DomainEvent]:
        s = self._settings
        async with self._uow() as uow:
            now = self._clock.now()
            events = []
            for w in uow.withdrawals.in_states(["created", "partially_signed", "signed"]):
                if w.expired(now, s.unsigned_ttl_seconds):
                    w.reject("expired before broadcast", now)
                    uow.reservations.release(w.withdrawal_id)
                    uow.withdrawals.save(w)
                    events.append(DomainEvent(f"withdrawal_expired:{w.withdrawal_id}", "withdrawal_expired",
                                              w.withdrawal_id, now, {"withdrawal_id": w.withdrawal_id}))
            pending = [w for w in uow.withdrawals.in_states(["broadcast"]) if w.txid is not None]
            views = await self._chain.wallet_transactions([w.txid for w in pending]) if pending else {}
            for w in pending:
                view = views.get(w.txid)
                if view is not None and view.confirmations > 0 and not w.confirmed_reported:
                    w.confirmed_reported = True   # seen back from the chain as an outgoing payment
                    uow.withdrawals.save(w)
                    events.append(DomainEvent(f"withdrawal_confirmed:{w.withdrawal_id}", "withdrawal_confirmed",
                                              w.withdrawal_id, now, {"withdrawal_id": w.withdrawal_id,
                                                                     "txid": w.txid.value,
                                                                     "confirmations": view.confirmations}))
                if view is not None and view.confirmations >= s.release_after_confirmations:
                    uow.reservations.release(w.withdrawal_id)   # spent for good: nothing to hold
                    continue
                if view is not None and (view.confirmations != 0 or view.in_mempool):
                    continue   # confirmed, in the mempool, or conflicted by a confirmed replacement
                if w.replaced_by and w.replaced_by in {x.withdrawal_id for x in pending}:
                    continue   # its replacement is the one to keep alive
                changed = False
                if w.rebroadcast_due(now, s.first_delay_seconds, s.max_delay_seconds):
                    _, raw, _ = finalize_psbt(s.network, w.psbt)
                    accept = await self._chain.test_accept(raw)
                    if accept.allowed:
                        await self._chain.broadcast(raw)
                    w.record_rebroadcast(now)
                    changed = True
                if w.stuck(now, s.stuck_after_seconds):
                    events.append(DomainEvent(f"withdrawal_stuck:{w.withdrawal_id}", "withdrawal_stuck",
                                              w.withdrawal_id, now, {"withdrawal_id": w.withdrawal_id,
                                                                     "txid": w.txid.value,
                                                                     "rebroadcasts": w.rebroadcasts}))
                    changed = True
                if changed:
                    uow.withdrawals.save(w)
            uow.record(events)
            uow.commit()
        committed = uow.committed_events()
        await self._publisher.publish(committed)
        return committed


class MonitorTick:
    """One round of the service: the payment poll, then keeping withdrawals alive."""

    def __init__(self, poll: Callable, rebroadcast: Callable) -> None:  # noqa: ANN001
        self._poll = poll
        self._rebroadcast = rebroadcast

    async def __call__(self) -> list[DomainEvent]:
        events = await self._poll()
        return events + await self._rebroadcast()
