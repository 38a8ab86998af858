"""The monitor's payjoin phase (application/payjoin.py FollowPayjoins) over memory storage and a
scripted node: fallback, joined, superseded, and when our coin is released."""
from __future__ import annotations

import pytest

from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.publisher import RecordingPublisher
from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.application.payjoin import FollowPayjoins
from kaccy_bitcoin.application.payjoin_offers import PayjoinSettings
from kaccy_bitcoin.domain.bitcoin import Network, OutPoint, Txid
from kaccy_bitcoin.domain.chain import MempoolAcceptance, WalletTransaction
from kaccy_bitcoin.domain.payjoin_session import PayjoinSession, PayjoinState, holder
from tests.test_payjoin import BIP78_ORIGINAL, BIP78_PROPOSAL

ORIGINAL, PROPOSAL = Txid("1" * 64), Txid("2" * 64)
COIN = OutPoint(Txid("3" * 64), 0)


class ScriptedChain(FakeChain):
    def __init__(self) -> None:
        super().__init__()
        self.views: dict[Txid, WalletTransaction] = {}
        self.accept = MempoolAcceptance(ORIGINAL, True)
        self.sent: list[bytes] = []

    async def wallet_transactions(self, txids):  # noqa: ANN001, ANN201
        return {t: self.views.get(t) for t in txids}

    async def test_accept(self, raw_tx: bytes) -> MempoolAcceptance:
        return self.accept

    async def broadcast(self, raw_tx: bytes) -> Txid:
        self.sent.append(raw_tx)
        return ORIGINAL


@pytest.fixture
def world():  # noqa: ANN201
    uow, chain, clock, publisher = MemoryUnitOfWorkFactory(), ScriptedChain(), ManualClock(), RecordingPublisher()
    session = PayjoinSession("tok", "order-1", clock.now())
    session.propose(BIP78_ORIGINAL, ORIGINAL, BIP78_PROPOSAL, PROPOSAL, COIN, 2_000_000, 2_000_000, 2_000_000,
                    clock.now())
    session.take_events()
    with uow() as u:
        u.payjoins.add(session)
        u.reservations.reserve([COIN], holder("tok"), clock.now())
        u.commit()
    follow = FollowPayjoins(uow, chain, clock, publisher, PayjoinSettings(Network.REGTEST, "http://x", 60))
    return uow, chain, clock, publisher, follow


def _state(uow) -> tuple[PayjoinState, bool, dict]:  # noqa: ANN001
    with uow.read() as u:
        s = u.payjoins.get("tok")
        return s.state, s.released, u.reservations.reserved()


async def test_the_original_goes_out_after_the_delay_and_the_coin_waits_for_its_confirmation(world) -> None:  # noqa: ANN001
    uow, chain, clock, publisher, follow = world
    clock.advance(59)
    assert await follow() == [] and chain.sent == []
    clock.advance(1)
    assert [e.kind for e in await follow()] == ["payjoin_fallback_broadcast"] and len(chain.sent) == 1
    assert _state(uow) == (PayjoinState.FALLBACK, False, {COIN: holder("tok")})
    chain.views[ORIGINAL] = WalletTransaction(ORIGINAL, 0, True, None)
    assert await follow() == [] and len(chain.sent) == 1          # in the mempool: not sent again
    chain.views[ORIGINAL] = WalletTransaction(ORIGINAL, 1, False, "b" * 64)
    assert [e.kind for e in await follow()] == ["payjoin_coin_released"]
    assert _state(uow) == (PayjoinState.FALLBACK, True, {})


async def test_a_sent_payjoin_is_joined_and_its_confirmation_releases_the_coin(world) -> None:  # noqa: ANN001
    uow, chain, clock, publisher, follow = world
    chain.views[PROPOSAL] = WalletTransaction(PROPOSAL, 0, True, None)
    clock.advance(600)
    assert await follow() == [] and chain.sent == []
    assert _state(uow)[:2] == (PayjoinState.JOINED, False)
    chain.views[PROPOSAL] = WalletTransaction(PROPOSAL, 1, False, "b" * 64)
    assert [e.kind for e in await follow()] == ["payjoin_coin_released"] and _state(uow)[2] == {}


async def test_inputs_spent_otherwise(world) -> None:  # noqa: ANN001
    uow, chain, clock, publisher, follow = world
    clock.advance(60)
    chain.accept = MempoolAcceptance(ORIGINAL, False, "txn-mempool-conflict")
    assert await follow() == [] and chain.sent == []
    assert _state(uow) == (PayjoinState.SUPERSEDED, False, {COIN: holder("tok")})   # the payjoin may still win
    chain.accept = MempoolAcceptance(ORIGINAL, False, "bad-txns-inputs-missingorspent")
    assert [e.kind for e in await follow()] == ["payjoin_coin_released"]
    assert _state(uow) == (PayjoinState.SUPERSEDED, True, {})


def test_sessions_are_stored_alike_everywhere(uow_factory) -> None:  # noqa: ANN001
    """The repository contract on memory, SQLite (and PostgreSQL when configured)."""
    from kaccy_bitcoin.domain.errors import ConcurrentUpdate

    clock = ManualClock()
    with uow_factory() as u:
        u.payjoins.add(PayjoinSession("tok-a", "order-a", clock.now()))
        u.commit()
    with uow_factory() as u:
        with pytest.raises(ConcurrentUpdate):
            u.payjoins.add(PayjoinSession("tok-b", "order-a", clock.now()))   # one session per order
    with uow_factory() as u:
        s = u.payjoins.get("tok-a")
        assert s.state is PayjoinState.OFFERED and u.payjoins.open() == []
        s.propose(BIP78_ORIGINAL, ORIGINAL, BIP78_PROPOSAL, PROPOSAL, COIN, 5, 4, 3, clock.now())
        u.payjoins.save(s)
        u.payjoins.record_inputs([OutPoint(ORIGINAL, 0), OutPoint(ORIGINAL, 1)], "tok-a")
        u.commit()
    with uow_factory() as u:
        s = u.payjoins.get("tok-a")
        assert (s.state, s.proposal_txid, s.coin, s.contributed_sat, s.customer_sat) == \
            (PayjoinState.PROPOSED, PROPOSAL, COIN, 4, 3)
        assert [t.trigger for t in s.machine.history] == ["propose"]
        assert list(u.payjoins.by_proposal_txids([PROPOSAL, ORIGINAL])) == [PROPOSAL]
        assert list(u.payjoins.for_orders(["order-a", "x"])) == ["order-a"]
        assert [o.token for o in u.payjoins.open()] == ["tok-a"]
        assert u.payjoins.seen_inputs([OutPoint(ORIGINAL, 1), OutPoint(ORIGINAL, 2)]) == {OutPoint(ORIGINAL, 1)}
        with pytest.raises(ConcurrentUpdate):
            u.payjoins.record_inputs([OutPoint(ORIGINAL, 1)], "tok-x")
    stale = s
    with uow_factory() as u:
        fresh = u.payjoins.get("tok-a")
        fresh.release(clock.now(), None)
        u.payjoins.save(fresh)
        u.commit()
    with uow_factory() as u:
        with pytest.raises(ConcurrentUpdate):
            u.payjoins.save(stale)
        assert u.payjoins.open() == []
