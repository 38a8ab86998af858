"""The tracker resubmits what the mempool lost, but never a withdrawal something took the place of
(issue 17, point 4): a voided or replaced original stays off the network as far as we are concerned."""
from __future__ import annotations

import datetime as dt

from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.application.withdrawal_tracker import TrackerSettings, TrackWithdrawals
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.withdrawals import VOID
from tests.test_monitor_isolation import T0, LosingChain, broadcast_withdrawal, raw_tx, with_notifier


async def test_of_a_lost_original_and_its_lost_void_only_the_void_is_sent_again(uow_factory) -> None:  # noqa: ANN001
    original, void = raw_tx(1), raw_tx(2)
    w1 = broadcast_withdrawal("w-1", original, keep=True)
    w2 = broadcast_withdrawal("w-2", void, keep=True)
    w2.replaces, w2.kind = "w-1", VOID
    with uow_factory() as uow:
        uow.withdrawals.save(w1)
        uow.withdrawals.save(w2)
        uow.commit()
    chain = LosingChain({})
    publisher, _ = with_notifier()
    clock = ManualClock(T0 + dt.timedelta(hours=1))
    track = TrackWithdrawals(uow_factory, chain, clock, publisher,
                             TrackerSettings(Network.REGTEST, first_delay_seconds=0))
    done = await track()
    assert chain.sent == [void]                 # both left the mempool; only the void goes back
    assert list(done.failed) == []
    clock.advance(7200)
    await track()
    assert chain.sent == [void, void]


async def test_a_lost_original_whose_replacement_was_cancelled_unsigned_is_sent_again(uow_factory) -> None:  # noqa: ANN001
    original = raw_tx(3)
    with uow_factory() as uow:
        uow.withdrawals.save(broadcast_withdrawal("w-3", original, keep=True))
        uow.commit()
    chain = LosingChain({})
    publisher, _ = with_notifier()
    track = TrackWithdrawals(uow_factory, chain, ManualClock(T0 + dt.timedelta(hours=1)), publisher,
                             TrackerSettings(Network.REGTEST, first_delay_seconds=0))
    await track()
    assert chain.sent == [original]
