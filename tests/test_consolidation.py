"""Consolidation: the plan's arithmetic, the machine's moves, following the withdrawal, the
repository on every store, and the stats totals."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaccy_bitcoin.application.consolidation import FollowConsolidations
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.coin_selection import Coin
from kaccy_bitcoin.domain.consolidation import Consolidation, follow, plan_consolidation
from kaccy_bitcoin.domain.consolidation_state import ConsolidationState
from kaccy_bitcoin.domain.errors import ConcurrentUpdate, ConsolidationInProgress, NothingToConsolidate
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.withdrawal_stats import confirmed_totals
from kaccy_bitcoin.domain.withdrawals import CONSOLIDATION, VOID
from tests.test_withdrawal_tracking import T0, broadcast, withdrawal

LT = FeeRate.from_sat_per_vb(10)
SHAPE = {"overhead_weight": 42, "output_weight": 124, "output_spend_weight": 272, "dust_limit": Satoshis(294)}


def coins(*amounts: int) -> list[Coin]:
    return [Coin(OutPoint(Txid(f"{i + 1:064x}"), 0), Satoshis(a)) for i, a in enumerate(amounts)]


def plan(amounts, rate: int | str = 1, **kw):  # noqa: ANN001, ANN201
    return plan_consolidation("default", coins(*amounts), FeeRate.from_sat_per_vb(rate), LT, **SHAPE, **kw)


def test_the_plan_merges_the_smallest_coins_and_says_what_it_saves() -> None:
    p = plan([50_000, 10_000, 30_000, 20_000], max_inputs=3)
    assert [c.amount.value for c in p.coins] == [10_000, 20_000, 30_000]
    vsize = -(-(42 + 3 * 272 + 124) // 4)
    assert p.fee == Satoshis(vsize)
    assert p.saving == Satoshis(2 * 680 - vsize)
    assert p.to_dict()["fee_rate"] == 1 and plan([1_000, 2_000], "1.5").to_dict()["fee_rate"] == 1.5
    assert p.output == Satoshis(60_000 - vsize)


@pytest.mark.parametrize("amounts, rate, why", [
    ([50_000], 1, "at least 2"),
    ([50_000, 60], 1, "at least 2"),            # 60 sat is not worth its own input fee
    ([50_000, 60_000], 10, "not worth it"),     # at the long-term rate merging saves nothing
    ([50_000, 60_000], 30, "not worth it"),
])
def test_nothing_worth_consolidating_is_refused(amounts: list[int], rate: int, why: str) -> None:
    with pytest.raises(NothingToConsolidate, match=why):
        plan(amounts, rate)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(300, 5_000_000), min_size=0, max_size=30), st.integers(1_000, 40_000),
       st.integers(1, 40))
def test_a_plan_always_saves_and_never_pays_more_than_it_spends(amounts: list[int], rate_kvb: int, most: int) -> None:
    try:
        p = plan_consolidation("default", coins(*amounts), FeeRate(rate_kvb), LT, **SHAPE, max_inputs=most)
    except NothingToConsolidate:
        return
    assert 2 <= len(p.coins) <= most
    assert p.saving.value > 0 and p.output.value >= 294
    assert p.total.value == p.output.value + p.fee.value
    assert len({c.outpoint for c in p.coins}) == len(p.coins)


def test_the_machine_goes_round_and_back_to_idle() -> None:
    c = Consolidation("default")
    p = plan([10_000, 20_000])
    c.analyze(T0)
    c.planned(p, T0)
    with pytest.raises(ConsolidationInProgress):   # a second run while one is executing
        c.executing("w1")
        c.analyze(T0)
    assert c.broadcast("aa" * 32, T0) is not None and c.state is ConsolidationState.CONSOLIDATING
    assert c.confirmed("aa" * 32, 1, T0) is not None and c.state is ConsolidationState.COMPLETED
    assert c.confirmed("aa" * 32, 2, T0) is None                # once
    c.analyze(T0)                                              # reset, then analyze
    c.skipped("nothing", T0)
    assert c.state is ConsolidationState.IDLE
    assert [t.trigger for t in c.machine.history] == [
        "analyze", "plan", "broadcast", "confirm", "reset", "analyze", "skip"]
    replayed = type(c.machine).replay(c.machine.history)
    assert replayed.state is ConsolidationState.IDLE


def test_a_plan_without_withdrawal_is_dropped_by_the_next_analysis() -> None:
    c = Consolidation("default")
    c.analyze(T0)
    c.planned(plan([10_000, 20_000]), T0)
    events = c.analyze(T0)
    assert [e.kind for e in events] == ["consolidation_abandoned"] and c.state is ConsolidationState.ANALYZING


def _executing(wid: str = "w1") -> Consolidation:
    c = Consolidation("default")
    c.analyze(T0)
    c.planned(plan([10_000, 20_000]), T0)
    c.executing(wid)
    return c


def test_follow_the_withdrawal_its_replacement_or_its_loss() -> None:
    w = broadcast(withdrawal("w1", "aa", kind=CONSOLIDATION))
    c = _executing()
    assert [e.kind for e in follow(c, [w], T0)] == ["consolidation_broadcast"]
    assert follow(c, [w], T0) == []
    w.machine.fire("confirm", at=T0)
    w.confirmations = 1
    assert [e.kind for e in follow(c, [w], T0)] == ["consolidation_completed"]

    c = _executing()             # a crash before CONSOLIDATING was recorded: both moves at once
    assert [e.kind for e in follow(c, [w], T0)] == ["consolidation_broadcast", "consolidation_completed"]

    c = _executing()             # an RBF replacement confirmed in its place
    old, new = broadcast(withdrawal("w1", "aa")), broadcast(withdrawal("w2", "bb", replaces="w1"))
    old.replaced_by = "w2"
    new.machine.fire("confirm", at=T0)
    old.machine.fire("replace", at=T0)
    assert [e.kind for e in follow(c, [old, new], T0)] == ["consolidation_broadcast", "consolidation_completed"]

    c = _executing()             # voided: the void's confirmation is no consolidation
    old, void = broadcast(withdrawal("w1", "aa")), broadcast(withdrawal("w2", "bb", replaces="w1", kind=VOID))
    void.machine.fire("confirm", at=T0)
    old.machine.fire("void", at=T0)
    old.settled = True
    assert [e.kind for e in follow(c, [old, void], T0)] == ["consolidation_abandoned"]
    assert c.state is ConsolidationState.IDLE and c.withdrawal_id is None

    c = _executing()             # created, never signed, expired
    lost = withdrawal("w1", "aa")
    lost.machine.fire("expire", at=T0)
    lost.settled = True
    assert [e.kind for e in follow(c, [lost], T0)] == ["consolidation_abandoned"]


def test_the_repository_on_every_store(uow_factory) -> None:  # noqa: ANN001
    with uow_factory() as uow:
        assert uow.consolidations.get("default") is None
        uow.consolidations.save(_executing())
        uow.commit()
    with uow_factory.read() as uow:
        c = uow.consolidations.get("default")
        assert c is not None and c.state is ConsolidationState.PLANNED and c.withdrawal_id == "w1"
        assert [o.txid.value[-1] for o in c.inputs] == ["1", "2"]
        assert [x.wallet for x in uow.consolidations.in_flight()] == ["default"]
        assert [t.trigger for t in c.machine.history] == ["analyze", "plan"]
    stale = c
    with uow_factory() as uow:
        fresh = uow.consolidations.get("default")
        fresh.broadcast("aa" * 32, T0)
        uow.consolidations.save(fresh)
        uow.commit()
    with uow_factory() as uow, pytest.raises(ConcurrentUpdate):
        uow.consolidations.save(stale)
    with uow_factory() as uow:
        assert uow.consolidations.get("default").state is ConsolidationState.CONSOLIDATING
        other = Consolidation("treasury")
        other.analyze(T0)
        other.skipped("nothing", T0)
        uow.consolidations.save(other)
        uow.commit()
    with uow_factory.read() as uow:
        assert [x.wallet for x in uow.consolidations.in_flight()] == ["default"]
        assert uow.analytics.received() == (0, 0)


def test_the_tracker_step_moves_it_in_the_trackers_unit_of_work(uow_factory) -> None:  # noqa: ANN001
    w = broadcast(withdrawal("w1", "aa", kind=CONSOLIDATION))
    w.machine.fire("confirm", at=T0)
    with uow_factory() as uow:
        uow.withdrawals.save(w)
        uow.consolidations.save(_executing("w1"))
        events = FollowConsolidations()(uow, T0)
        uow.record(events)
        uow.commit()
    assert [e.kind for e in events] == ["consolidation_broadcast", "consolidation_completed"]
    with uow_factory.read() as uow:
        assert uow.consolidations.get("default").state is ConsolidationState.COMPLETED
        assert uow.consolidations.in_flight() == []


def test_stats_totals_over_confirmed_withdrawals() -> None:
    a, b = broadcast(withdrawal("w1", "aa")), broadcast(withdrawal("w2", "bb"))
    a.machine.fire("confirm", at=T0 + dt.timedelta(seconds=600))
    b.machine.fire("confirm", at=T0 + dt.timedelta(seconds=1201))
    totals = confirmed_totals([a, b])
    assert (totals.count, totals.volume_out, totals.fees, totals.average_confirmation_seconds) == (
        2, 18_000, 2_000, 900)
    assert confirmed_totals([]).average_confirmation_seconds is None
    assert a.state is PsbtState.CONFIRMED
