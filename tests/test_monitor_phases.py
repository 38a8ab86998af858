"""The poll reads, asks the node with no unit of work open, then writes: on SQLite an `order create`
is never stuck behind a node call, and a monitor that committed meanwhile makes the poll read again.
Also the read-only unit of work, `paid_reported` in storage, and lateness by the node's first-seen time."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.publisher import RecordingPublisher
from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.application.monitor import PollPayments
from kaccy_bitcoin.application.orders import CreateOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.domain.addresses import MonitorCursor
from kaccy_bitcoin.domain.bitcoin import Network, OutPoint, Txid
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import OutputObservation, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds

WORDS = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def deriver() -> Bip32AddressDeriver:
    seed = Bip39SeedGenerator(WORDS).Generate()
    vpub = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()
    return Bip32AddressDeriver(vpub, Network.REGTEST)


class HeldChain(FakeChain):
    """A fake node whose first answer to `hold` waits until the test releases it."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.hold: str | None = None
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def _wait(self, method: str) -> None:
        if self.hold == method:
            self.hold = None
            self.entered.set()
            await self.release.wait()

    async def wallet_history(self, since_block, target_confirmations):  # noqa: ANN001, ANN201
        await self._wait("wallet_history")
        return await super().wallet_history(since_block, target_confirmations)

    async def in_mempool(self, txids):  # noqa: ANN001, ANN201
        await self._wait("in_mempool")
        return await super().in_mempool(txids)

    async def wallet_transactions(self, txids):  # noqa: ANN001, ANN201
        await self._wait("wallet_transactions")
        return await super().wallet_transactions(txids)


def kinds(events) -> list[str]:  # noqa: ANN001
    return [e.kind for e in events]


@pytest.fixture
def shop(tmp_path):  # noqa: ANN001, ANN201
    """One SQLite database; an order paid and detected; its transaction then left the mempool,
    so the next poll asks the node about it with listsinceblock, the mempool and gettransaction."""
    d = deriver()
    url = f"sqlite:///{tmp_path}/kaccy.db"
    chain = HeldChain(lambda desc, end: d.addresses(0, 0, end + 1))
    store = SqlUnitOfWorkFactory(make_engine(url))
    settings, clock = PaymentSettings(), ManualClock()

    async def start() -> PollPayments:
        order = await CreateOrder(store, d, WatchRange(d, chain, 20), clock, settings)("o-1", Satoshis(20_000))
        txid = chain.pay(order["address"], 20_000)
        poll = PollPayments(store, chain, clock, RecordingPublisher(), settings)
        assert kinds(await poll()) == ["payment_detected"]
        chain.drop_from_mempool(txid)
        return poll

    return d, url, chain, store, settings, start


@pytest.mark.parametrize("held", ["wallet_history", "in_mempool", "wallet_transactions"])
async def test_a_poll_waiting_on_the_node_does_not_block_an_order_create(shop, held) -> None:  # noqa: ANN001
    d, url, chain, store, settings, start = shop
    poll = await start()
    other = SqlUnitOfWorkFactory(make_engine(url))   # another process: its own engine and connections
    create = CreateOrder(other, d, WatchRange(d, FakeChain(), 20), ManualClock(), settings)

    def create_order() -> float:
        began = time.monotonic()
        asyncio.run(create("o-2", Satoshis(1_000)))
        return time.monotonic() - began

    chain.hold = held
    polling = asyncio.create_task(poll())
    await asyncio.wait_for(chain.entered.wait(), 10)
    creating = asyncio.get_running_loop().run_in_executor(None, create_order)
    try:
        took = await asyncio.wait_for(asyncio.shield(creating), 1.0)
    finally:
        chain.release.set()   # whatever happened, let the poll finish and free the database
        events = await polling
        await creating
    assert took < 1.0
    assert kinds(events) == ["payment_reorged"]
    with store() as uow:
        assert uow.requests.get("o-2") is not None


async def test_a_monitor_that_committed_meanwhile_makes_the_poll_read_again(shop, caplog) -> None:  # noqa: ANN001
    d, url, chain, store, settings, start = shop
    poll = await start()
    second = PollPayments(SqlUnitOfWorkFactory(make_engine(url)), chain, ManualClock(), RecordingPublisher(),
                          settings)
    chain.hold = "wallet_transactions"
    polling = asyncio.create_task(poll())
    await asyncio.wait_for(chain.entered.wait(), 10)
    assert kinds(await second()) == ["payment_reorged"]   # the other monitor commits first
    chain.release.set()
    assert await polling == []   # it saw the other's commit, polled again, and found it all done
    assert [r.message for r in caplog.records] == [
        "another writer changed payments during this poll; trying again"]
    with store() as uow:
        assert kinds(uow.audit.events("o-1")) == ["payment_detected", "payment_reorged"]
        assert uow.cursors.get("payments:polls") == MonitorCursor("", 3)   # the first poll, the other's, the retry


async def test_the_poll_reads_in_read_only_units_of_work(shop) -> None:  # noqa: ANN001
    d, url, chain, store, settings, start = shop
    poll = await start()
    opened: list[bool] = []
    read, write = store.read, store.__call__

    class Counting:
        def read(self):  # noqa: ANN202
            opened.append(True)
            return read()

        def __call__(self):  # noqa: ANN204
            opened.append(False)
            return write()

    poll._uow = Counting()
    assert kinds(await poll()) == ["payment_reorged"]
    assert opened == [True, True, False]   # cursor; unsettled outputs (thread); the one write


def test_a_read_only_unit_of_work_reads_committed_state_and_refuses_to_commit(uow_factory) -> None:  # noqa: ANN001
    request = PaymentRequest("o-1", "bcrt1qreadonly", Satoshis(10_000), T0)
    paid = Payment("o-1")
    paid.observe(request, OutputObservation(OutPoint(Txid("ab" * 32), 0), Satoshis(10_000), 1), T0)
    paid.settle(request, ConfirmationThresholds(), T0)
    assert paid.paid_reported and kinds(paid.take_events())[-1] == "order_paid"
    with uow_factory() as uow:
        uow.requests.add(request)
        uow.payments.save([paid])
        uow.commit()
    with uow_factory.read() as uow:
        assert uow.payments.get("o-1").paid_reported is True   # stored and read back
        uow.cursors.set("payments", MonitorCursor("cd" * 32))
        with pytest.raises(RuntimeError, match="read-only"):
            uow.commit()
    with uow_factory() as uow:
        assert uow.cursors.get("payments") is None
    # Seen again after a reorg took it back to unconfirmed and then confirmed again: no second order_paid.
    with uow_factory() as uow:
        again = uow.payments.get("o-1")
    for depth in (0, 1):
        again.observe(request, OutputObservation(OutPoint(Txid("ab" * 32), 0), Satoshis(10_000), depth), T0)
        again.settle(request, ConfirmationThresholds(), T0)
    assert kinds(again.take_events()) == ["payment_reorged", "payment_confirmed"]


async def test_lateness_is_judged_by_when_the_node_first_saw_the_payment() -> None:
    """The monitor was down for an hour: an on-time payment is not late; one made after expiry is."""
    d, clock = deriver(), ManualClock(T0)
    chain = FakeChain(lambda desc, end: d.addresses(0, 0, end + 1), clock=clock)
    store, settings = MemoryUnitOfWorkFactory(), PaymentSettings()
    create = CreateOrder(store, d, WatchRange(d, chain, 20), clock, settings)
    poll = PollPayments(store, chain, clock, RecordingPublisher(), settings)
    on_time = await create("on-time", Satoshis(10_000), expires_in=60)
    late = await create("late", Satoshis(10_000), expires_in=60)
    clock.advance(59)
    chain.pay(on_time["address"], 10_000)            # first seen a second before expiry
    clock.advance(2)
    chain.pay(late["address"], 10_000)               # first seen a second after it
    clock.advance(3600)                              # the monitor's first poll comes an hour later
    events = await poll()
    assert sorted((e.subject, e.kind) for e in events) == [
        ("late", "payment_detected"), ("late", "payment_late"), ("on-time", "payment_detected")]
    late_event = next(e for e in events if e.kind == "payment_late")
    assert late_event.data["reason"] == "order_expired"
    assert late_event.data["first_seen"] == (T0 + dt.timedelta(seconds=61)).isoformat()
    with store() as uow:
        assert uow.payments.get("on-time").outputs.popitem()[1].first_seen == T0 + dt.timedelta(seconds=59)
