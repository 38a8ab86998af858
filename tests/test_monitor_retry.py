"""A poll that loses a race to another writer rolls back and polls again, counting nothing twice."""
from __future__ import annotations

from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins
import pytest

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.publisher import RecordingPublisher
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.application.monitor import PollPayments
from kaccy_bitcoin.application.orders import CreateOrder, ShowOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.domain.money import Satoshis

WORDS = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"


class LosesRaces:
    """A unit-of-work factory whose first `losses` payment saves meet a concurrent writer."""

    def __init__(self, inner: SqlUnitOfWorkFactory, losses: int) -> None:
        self._inner = inner
        self.losses = losses

    def __call__(self):  # noqa: ANN204
        uow = self._inner()
        factory = self

        class Wrapped(type(uow)):
            def _begin(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
                super()._begin(*args, **kwargs)
                save = self.payments.save

                def racing_save(payments):  # noqa: ANN001, ANN202
                    save(payments)   # written, then refused, as a version check would
                    if factory.losses > 0:
                        factory.losses -= 1
                        raise ConcurrentUpdate("1 of 1 payments were changed by another writer")

                self.payments.save = racing_save

        uow.__class__ = Wrapped
        return uow

    def read(self):  # noqa: ANN201
        return self._inner.read()


@pytest.fixture
def setup(tmp_path):  # noqa: ANN001, ANN201
    seed = Bip39SeedGenerator(WORDS).Generate()
    vpub = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()
    deriver = Bip32AddressDeriver(vpub, Network.REGTEST)
    chain = FakeChain(lambda desc, end: deriver.addresses(0, 0, end + 1))
    store = SqlUnitOfWorkFactory(make_engine(f"sqlite:///{tmp_path}/kaccy.db"))
    settings, clock = PaymentSettings(), ManualClock()
    create = CreateOrder(store, deriver, WatchRange(deriver, chain, 20), clock, settings)
    return chain, store, create, settings, clock


async def test_a_poll_that_loses_a_race_polls_again_and_counts_once(setup) -> None:
    chain, store, create, settings, clock = setup
    order = await create("o-1", Satoshis(20_000))
    chain.pay(order["address"], 20_000)
    chain.mine(1)
    publisher = RecordingPublisher()
    racing = LosesRaces(store, losses=2)
    events = await PollPayments(racing, chain, clock, publisher, settings)()
    assert racing.losses == 0
    assert [e.kind for e in events] == ["payment_detected", "payment_confirmed", "order_paid"]
    assert publisher.kinds() == ["payment_detected", "payment_confirmed", "order_paid"]
    view = await ShowOrder(store)("o-1")
    assert (view.status, view.received_sat, view.confirmations) == ("confirmed", 20_000, 1)
    with store() as uow:
        assert [e.kind for e in uow.audit.events("o-1")] == ["payment_detected", "payment_confirmed", "order_paid"]


async def test_a_poll_that_keeps_losing_gives_up_with_the_typed_error(setup) -> None:
    chain, store, create, settings, clock = setup
    order = await create("o-1", Satoshis(20_000))
    chain.pay(order["address"], 20_000)
    publisher = RecordingPublisher()
    with pytest.raises(ConcurrentUpdate):
        await PollPayments(LosesRaces(store, losses=3), chain, clock, publisher, settings)()
    assert publisher.kinds() == []
    with store() as uow:
        assert uow.audit.events("o-1") == [] and uow.cursors.get("payments") is None
    assert [e.kind for e in await PollPayments(store, chain, clock, publisher, settings)()] == [
        "payment_detected"]
