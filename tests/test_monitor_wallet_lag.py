"""A poll between the node connecting a block and handing it to its wallet (issue 17, point 16).

The node drops a mined transaction from its mempool as it connects the block and notifies its
wallets afterwards, so for a moment the wallet lists the payment unconfirmed while the mempool no
longer has it. A poll in that moment must conclude nothing about it: not a payment gone (reorged
or double-spent) and, for a payment it never saw, not a miss either; the next poll sees the block.
"""
from __future__ import annotations

from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.publisher import RecordingPublisher
from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.application.monitor import PollPayments
from kaccy_bitcoin.application.orders import CreateOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.domain.money import Satoshis
from tests.test_monitor_phases import T0, deriver


def shop():  # noqa: ANN201
    d, clock = deriver(), ManualClock(T0)
    chain = FakeChain(lambda desc, end: d.addresses(0, 0, end + 1), clock=clock)
    store, settings = MemoryUnitOfWorkFactory(), PaymentSettings()
    create = CreateOrder(store, d, WatchRange(d, chain, 20), clock, settings)
    return chain, store, create, PollPayments(store, chain, clock, RecordingPublisher(), settings)


def kinds(events) -> list[str]:  # noqa: ANN001
    return [e.kind for e in events]


async def test_a_seen_payment_mined_in_a_block_the_wallet_has_not_taken_in_is_not_gone() -> None:
    chain, store, create, poll = shop()
    order = await create("o-1", Satoshis(50_000))
    chain.pay(order["address"], 50_000)
    assert kinds(await poll()) == ["payment_detected"]
    chain.wallet_lag = 1
    chain.mine(1)                      # the mempool drops it; the wallet still lists it unconfirmed
    assert await poll() == []          # neither reorged nor double-spent: nothing to conclude yet
    with store.read() as uow:
        assert uow.payments.get("o-1").received == Satoshis(50_000)
    chain.wallet_lag = 0               # the wallet takes the block in
    assert kinds(await poll()) == ["payment_confirmed", "order_paid"]


async def test_a_payment_first_listed_in_that_moment_is_counted_by_the_next_poll_once() -> None:
    chain, store, create, poll = shop()
    order = await create("o-2", Satoshis(70_000))
    chain.pay(order["address"], 70_000)
    chain.wallet_lag = 1
    chain.mine(1)
    assert await poll() == []
    chain.wallet_lag = 0
    events = await poll()
    assert kinds(events) == ["payment_detected", "payment_confirmed", "order_paid"]
    assert events[0].data["amount_sat"] == 70_000
    assert await poll() == []


async def test_a_payment_evicted_while_the_wallet_is_current_is_still_reported_gone() -> None:
    chain, store, create, poll = shop()
    order = await create("o-3", Satoshis(30_000))
    txid = chain.pay(order["address"], 30_000)
    assert kinds(await poll()) == ["payment_detected"]
    chain.drop_from_mempool(txid)      # evicted: the wallet is current, so this is a real departure
    assert "payment_reorged" in kinds(await poll())
