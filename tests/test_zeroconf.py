"""Zero-conf risk: the rules and their weights (domain/zeroconf.py), and the monitor accepting an
order before it confirms, and reporting a double spend of what it accepted, on the fake chain."""
from __future__ import annotations

import attrs
import pytest
from hypothesis import given, strategies as st

from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.publisher import RecordingPublisher
from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.application.monitor import PollPayments
from kaccy_bitcoin.application.orders import CreateOrder, ShowOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.domain.bitcoin import Txid
from kaccy_bitcoin.domain.chain import MempoolEntry
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.zeroconf import (
    WEIGHTS,
    ZeroconfAcceptance,
    ZeroconfFacts,
    ZeroconfPolicy,
    ZeroconfRisk,
    score,
)
from tests.test_monitor_phases import T0, deriver

RIVAL = Txid("ab" * 32)
SAFE = ZeroconfFacts(Satoshis(10_000), in_mempool=True, fee_rate=FeeRate(20_000), package_fee_rate=FeeRate(20_000),
                     next_block_rate=FeeRate(10_000), mempool_min_fee=FeeRate(1_000))


def test_a_safe_payment_scores_zero_and_each_rule_adds_its_weight() -> None:
    assert score(SAFE, 50_000) == ZeroconfRisk(0, ())
    cases = {
        "conflict_seen": attrs.evolve(SAFE, conflicts=(RIVAL,)),
        "not_in_mempool": attrs.evolve(SAFE, in_mempool=False, fee_rate=None, package_fee_rate=None),
        "replaceable": attrs.evolve(SAFE, signals_rbf=True),
        "fee_below_next_block": attrs.evolve(SAFE, next_block_rate=FeeRate(25_000)),
        "fee_near_mempool_minimum": attrs.evolve(SAFE, mempool_min_fee=FeeRate(15_000), next_block_rate=None),
        "large_amount": attrs.evolve(SAFE, amount=Satoshis(50_001)),
        "unconfirmed_parents": attrs.evolve(SAFE, unconfirmed_ancestors=1),
    }
    for reason, facts in cases.items():
        risk = score(facts, 50_000)
        assert (risk.score, risk.reasons) == (WEIGHTS[reason], (reason,)), reason
        assert dict(risk.details)[reason]          # every reason says why it fired
    full = score(attrs.evolve(SAFE, node_full_rbf=True), 50_000)
    assert full.reasons == ("replaceable",) and "full-RBF" in dict(full.details)["replaceable"]
    chain = score(attrs.evolve(SAFE, unconfirmed_ancestors=5), 50_000)
    assert chain.reasons == ("unconfirmed_parents", "long_unconfirmed_chain") and chain.score == 30


def test_the_package_rate_counts_when_a_cheap_parent_holds_the_payment_back() -> None:
    cheap_parent = attrs.evolve(SAFE, package_fee_rate=FeeRate(1_500), unconfirmed_ancestors=1)
    assert score(cheap_parent).reasons == ("fee_below_next_block", "fee_near_mempool_minimum", "unconfirmed_parents")


def test_large_amount_only_when_a_maximum_is_set() -> None:
    big = attrs.evolve(SAFE, amount=Satoshis(10**12))
    assert score(big, 0).reasons == () and score(big, 10**12 - 1).reasons == ("large_amount",)


facts_strategy = st.builds(
    ZeroconfFacts, amount=st.integers(0, 10**9).map(Satoshis), in_mempool=st.booleans(), signals_rbf=st.booleans(),
    node_full_rbf=st.booleans(), fee_rate=st.none() | st.integers(0, 10**6).map(FeeRate),
    package_fee_rate=st.none() | st.integers(0, 10**6).map(FeeRate),
    next_block_rate=st.none() | st.integers(0, 10**6).map(FeeRate),
    mempool_min_fee=st.integers(0, 10**5).map(FeeRate), unconfirmed_ancestors=st.integers(0, 30),
    conflicts=st.lists(st.just(RIVAL), max_size=1).map(tuple))


@given(facts_strategy, st.integers(0, 10**9))
def test_the_score_is_the_capped_sum_of_the_reasons_weights(facts: ZeroconfFacts, max_sat: int) -> None:
    risk = score(facts, max_sat)
    assert risk.score == min(100, sum(WEIGHTS[r] for r in risk.reasons))
    assert len(set(risk.reasons)) == len(risk.reasons) and {r for r, _ in risk.details} == set(risk.reasons)
    assert ("replaceable" in risk.reasons) == (facts.signals_rbf or facts.node_full_rbf)
    assert ("conflict_seen" in risk.reasons) == bool(facts.conflicts)
    assert ZeroconfRisk.from_dict(risk.to_dict()) == risk


@given(facts_strategy, st.sampled_from(["signals_rbf", "node_full_rbf", "conflicts", "unconfirmed_ancestors",
                                        "in_mempool"]))
def test_a_worse_fact_never_lowers_the_score(facts: ZeroconfFacts, worse: str) -> None:
    value = {"signals_rbf": True, "node_full_rbf": True, "conflicts": (RIVAL,),
             "unconfirmed_ancestors": facts.unconfirmed_ancestors + 1, "in_mempool": False}[worse]
    assert score(attrs.evolve(facts, **{worse: value})).score >= score(facts).score


def test_the_policy() -> None:
    off, on = ZeroconfPolicy(), ZeroconfPolicy(max_sat=50_000, max_score=30)
    low, high = ZeroconfRisk(30, ()), ZeroconfRisk(31, ())
    assert not off.enabled and not off.allows(Satoshis(1), ZeroconfRisk(0, ()))
    assert on.allows(Satoshis(50_000), low) and not on.allows(Satoshis(50_001), low)
    assert not on.allows(Satoshis(1), high) and not on.allows(Satoshis(1), None)
    with pytest.raises(ValueError):
        ZeroconfPolicy(max_score=101)


def test_an_acceptance_reads_back_and_counts_what_it_lost() -> None:
    accepted = ZeroconfAcceptance(T0, ("aa" * 32,), 50_000)
    lost = accepted.lost(["aa" * 32], ["bb" * 32], 20_000, T0)
    assert lost.double_spend.amount_lost_sat == 30_000 and lost.double_spend.replaced_by == ("bb" * 32,)
    assert ZeroconfAcceptance.from_dict(lost.to_dict()) == lost
    assert accepted.lost(["aa" * 32], [], 60_000, T0).double_spend.amount_lost_sat == 0


# -- the monitor on the fake chain ----------------------------------------------------------

def shop(policy: ZeroconfPolicy):  # noqa: ANN201
    d, clock = deriver(), ManualClock(T0)
    chain = FakeChain(lambda desc, end: d.addresses(0, 0, end + 1), clock=clock)
    store, settings = MemoryUnitOfWorkFactory(), PaymentSettings(zeroconf=policy)
    create = CreateOrder(store, d, WatchRange(d, chain, 20), clock, settings)
    return chain, store, create, PollPayments(store, chain, clock, RecordingPublisher(), settings)


def kinds(events) -> list[str]:  # noqa: ANN001
    return [e.kind for e in events]


def good_fee(chain: FakeChain, txid: str) -> None:
    chain.entries[txid] = MempoolEntry(Txid(txid), 141, Satoshis(2_820), Satoshis(2_820), 141, 1_700_000_000,
                                       ancestor_count=1, ancestor_vsize=141, ancestor_fees=Satoshis(2_820))


async def test_an_order_paid_by_safe_unconfirmed_payments_is_accepted_once_and_still_confirms() -> None:
    chain, store, create, poll = shop(ZeroconfPolicy(max_sat=60_000))
    address = (await create("zc-1", Satoshis(100_000)))["address"]
    first = chain.pay(address, 50_000)
    good_fee(chain, first)
    events = await poll()
    assert kinds(events) == ["payment_detected", "order_underpaid"]
    assert events[0].data["zeroconf_risk"] == {"score": 0, "reasons": [], "details": {}}
    second = chain.pay(address, 50_000)
    good_fee(chain, second)
    events = await poll()
    assert kinds(events) == ["payment_detected", "order_accepted_zeroconf"]
    assert events[1].data["txids"] == sorted([first, second]) and events[1].data["accepted_sat"] == 100_000
    assert await poll() == []
    view = (await ShowOrder(store)("zc-1")).to_dict()
    assert view["accepted_zeroconf"] is True and view["status"] == "unconfirmed"
    assert [p["zeroconf_risk"]["score"] for p in view["payments"]] == [0, 0]
    chain.mine(1)
    assert kinds(await poll()) == ["payment_confirmed", "order_paid"]   # confirmations still count
    view = (await ShowOrder(store)("zc-1")).to_dict()
    assert view["accepted_zeroconf"] is True and all(p["zeroconf_risk"] for p in view["payments"])
    assert [p["confirmations"] for p in view["payments"]] == [1, 1]


async def test_a_risky_or_too_large_payment_is_not_accepted_and_off_accepts_nothing() -> None:
    for policy, fee, amount in ((ZeroconfPolicy(max_sat=60_000), False, 50_000),   # 1 sat/vB: near the minimum
                                (ZeroconfPolicy(max_sat=40_000), True, 50_000),    # above the maximum
                                (ZeroconfPolicy(), True, 50_000)):                 # off
        chain, store, create, poll = shop(policy)
        address = (await create("zc-2", Satoshis(amount)))["address"]
        txid = chain.pay(address, amount)
        if fee:
            good_fee(chain, txid)
        events = await poll()
        assert kinds(events) == ["payment_detected"], policy
        view = (await ShowOrder(store)("zc-2")).to_dict()
        assert view["accepted_zeroconf"] is False and view["payments"][0]["zeroconf_risk"] is not None


async def test_a_fee_below_the_node_estimate_for_the_next_blocks_is_not_accepted() -> None:
    chain, store, create, poll = shop(ZeroconfPolicy(max_sat=60_000))
    chain.fee_rate = FeeRate(30_000)   # estimatesmartfee: 30 sat/vB; the payment pays 20
    address = (await create("zc-est", Satoshis(50_000)))["address"]
    good_fee(chain, chain.pay(address, 50_000))
    events = await poll()
    assert kinds(events) == ["payment_detected"]
    assert events[0].data["zeroconf_risk"]["reasons"] == ["fee_below_next_block"]


async def test_full_rbf_makes_every_payment_replaceable() -> None:
    chain, store, create, poll = shop(ZeroconfPolicy(max_sat=60_000))
    chain.full_rbf = True
    address = (await create("zc-3", Satoshis(50_000)))["address"]
    good_fee(chain, chain.pay(address, 50_000))
    events = await poll()
    assert kinds(events) == ["payment_detected"] and events[0].data["zeroconf_risk"]["reasons"] == ["replaceable"]


async def test_a_double_spend_of_an_accepted_payment_is_reported_once_with_the_amount_lost() -> None:
    chain, store, create, poll = shop(ZeroconfPolicy(max_sat=60_000))
    address = (await create("zc-4", Satoshis(50_000)))["address"]
    txid = chain.pay(address, 50_000)
    good_fee(chain, txid)
    assert kinds(await poll()) == ["payment_detected", "order_accepted_zeroconf"]
    rival = chain.double_spend(txid)
    events = await poll()
    assert kinds(events) == ["payment_double_spent", "zeroconf_double_spend"]
    lost = events[1]
    assert lost.is_discrepancy and lost.data["txids"] == [txid] and lost.data["amount_lost_sat"] == 50_000
    assert await poll() == []
    chain.mine(1, include=[rival])
    assert "zeroconf_double_spend" not in kinds(await poll())
    view = (await ShowOrder(store)("zc-4")).to_dict()
    assert view["accepted_zeroconf"] is True and view["zeroconf_double_spend"]["txids"] == [txid]
    assert view["zeroconf_double_spend"]["amount_lost_sat"] == 50_000
    assert view["payments"][0]["status"] == "double_spent"


async def test_a_fee_bump_paying_the_same_is_reported_with_nothing_lost() -> None:
    chain, store, create, poll = shop(ZeroconfPolicy(max_sat=60_000))
    address = (await create("zc-5", Satoshis(50_000)))["address"]
    txid = chain.pay(address, 50_000)
    good_fee(chain, txid)
    assert kinds(await poll()) == ["payment_detected", "order_accepted_zeroconf"]
    bump = chain.replace(txid)
    events = await poll()
    assert sorted(kinds(events)) == ["payment_detected", "payment_replaced", "zeroconf_double_spend"]
    lost = next(e for e in events if e.kind == "zeroconf_double_spend")
    assert lost.data["amount_lost_sat"] == 0 and lost.data["replaced_by"] == [bump]
    detected = next(e for e in events if e.kind == "payment_detected")
    assert "conflict_seen" in detected.data["zeroconf_risk"]["reasons"]


def test_risks_and_an_acceptance_with_its_double_spend_are_stored_and_read_back(uow_factory) -> None:  # noqa: ANN001
    from kaccy_bitcoin.domain.bitcoin import OutPoint
    from kaccy_bitcoin.domain.orders import OutputObservation, OutputStatus, Payment, PaymentRequest
    from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds

    r = PaymentRequest("zc-s", "bcrt1qzeroconf", Satoshis(30_000), T0)
    risk = score(attrs.evolve(SAFE, signals_rbf=True, unconfirmed_ancestors=1))
    first, second = OutPoint(Txid("01" * 32), 0), OutPoint(Txid("02" * 32), 1)
    p = Payment("zc-s")
    p.observe(r, OutputObservation(first, Satoshis(10_000), 0, zeroconf_risk=ZeroconfRisk(0, ())), T0)
    p.observe(r, OutputObservation(second, Satoshis(20_000), 0, zeroconf_risk=risk), T0)
    p.settle(r, ConfirmationThresholds(), T0, ZeroconfPolicy(max_sat=50_000, max_score=70))
    assert p.zeroconf is not None and p.zeroconf.accepted_sat == 30_000
    with uow_factory() as uow:
        uow.requests.add(r)
        uow.payments.save([p])
        uow.commit()
    with uow_factory() as uow:
        loaded = uow.payments.get("zc-s")
        assert loaded.outputs == p.outputs and loaded.zeroconf == p.zeroconf
        loaded.withdraw(r, second, OutputStatus.DOUBLE_SPENT, T0)
        loaded.settle(r, ConfirmationThresholds(), T0, ZeroconfPolicy(max_sat=50_000, max_score=70))
        assert [e.kind for e in loaded.take_events()] == ["payment_double_spent", "order_underpaid",
                                                          "zeroconf_double_spend"]
        uow.payments.save([loaded])
        uow.commit()
    with uow_factory() as uow:
        again = uow.payments.get("zc-s")
    assert again.zeroconf.double_spend.txids == ("02" * 32,) and again.zeroconf.double_spend.amount_lost_sat == 20_000
    assert again.outputs[second].zeroconf_risk == risk and again.outputs[second].status is OutputStatus.DOUBLE_SPENT


def test_the_settings_are_checked(tmp_path) -> None:  # noqa: ANN001
    import json
    import os
    import subprocess

    from kaccy_bitcoin.bootstrap import config
    from tests.payments_harness import CLI

    loaded = config.load({"KACCY_ZEROCONF_MAX_SAT": "50000", "KACCY_ZEROCONF_MAX_SCORE": "20"})
    assert (loaded["zeroconf_max_sat"], loaded["zeroconf_max_score"]) == (50_000, 20)
    assert (config.load({})["zeroconf_max_sat"], config.load({})["zeroconf_max_score"]) == (0, 30)
    for bad in ({"KACCY_ZEROCONF_MAX_SAT": "-1"}, {"KACCY_ZEROCONF_MAX_SAT": "1.5"},
                {"KACCY_ZEROCONF_MAX_SCORE": "101"}, {"KACCY_ZEROCONF_MAX_SCORE": "x"}):
        with pytest.raises(config.ConfigError, match="KACCY_ZEROCONF_MAX_"):
            config.load(bad)
    env = {**os.environ, "KACCY_DATA_DIR": str(tmp_path), "KACCY_ZEROCONF_MAX_SCORE": "200"}
    proc = subprocess.run([CLI, "order", "show", "any"], env=env, capture_output=True, text=True, timeout=60)
    answer = json.loads(proc.stdout)
    assert proc.returncode != 0 and answer["error"]["code"] == "config_error" and "Traceback" not in proc.stderr


async def test_a_payment_after_the_order_expired_is_not_accepted() -> None:
    import datetime as dt

    chain, store, create, poll = shop(ZeroconfPolicy(max_sat=60_000))
    address = (await create("zc-late", Satoshis(50_000), expires_in=60))["address"]
    good_fee(chain, chain.pay(address, 50_000, seen_at=T0 + dt.timedelta(seconds=61)))
    events = await poll()
    assert "order_accepted_zeroconf" not in kinds(events) and "payment_late" in kinds(events)


@given(st.lists(st.tuples(st.sampled_from(["pay", "confirm", "replace", "double_spend", "revive"]),
                          st.integers(0, 3), st.integers(0, 60)), max_size=25))
def test_an_order_is_accepted_at_most_once_and_each_loss_reported_once(steps) -> None:  # noqa: ANN001
    from kaccy_bitcoin.domain.bitcoin import OutPoint
    from kaccy_bitcoin.domain.orders import OutputObservation, OutputStatus, Payment, PaymentRequest
    from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds

    r = PaymentRequest("zc-p", "bcrt1qprop", Satoshis(40_000), T0)
    policy, p, events = ZeroconfPolicy(max_sat=30_000, max_score=30), Payment("zc-p"), []
    amounts = {n: Satoshis(10_000 + 5_000 * n) for n in range(4)}
    for action, n, seen_score in steps:
        out = OutPoint(Txid(f"{n + 1:064x}"), 0)
        if action in ("pay", "revive", "confirm"):
            depth = 1 if action == "confirm" else 0
            p.observe(r, OutputObservation(out, amounts[n], depth, zeroconf_risk=ZeroconfRisk(seen_score, ())), T0)
        else:
            p.withdraw(r, out, OutputStatus.REPLACED if action == "replace" else OutputStatus.DOUBLE_SPENT, T0)
        p.settle(r, ConfirmationThresholds(), T0, policy)
        events += p.take_events()
    accepted = [e for e in events if e.kind == "order_accepted_zeroconf"]
    assert len(accepted) <= 1 and (p.zeroconf is not None) == bool(accepted)
    lost = [t for e in events if e.kind == "zeroconf_double_spend" for t in e.data["txids"]]
    assert len(lost) == len(set(lost)) and set(lost) <= set(accepted[0].data["txids"] if accepted else ())
    for e in accepted:   # only on payments the policy allows
        assert all(x["amount_sat"] <= 30_000 and x["score"] <= 30 for x in e.data["payments"])


async def test_nothing_is_accepted_before_it_confirms_while_the_nodes_disagree() -> None:
    from kaccy_bitcoin.domain.nodes import NodeReport
    from kaccy_bitcoin.ports.bitcoin_node import NodeSet

    class Nodes(NodeSet):
        diverged = True

        async def cross_check(self) -> NodeReport:
            return NodeReport((), self.diverged)

        async def finality_held(self) -> bool:
            return self.diverged

    chain, store, create, _ = shop(ZeroconfPolicy(max_sat=60_000))
    nodes = Nodes()
    settings = PaymentSettings(zeroconf=ZeroconfPolicy(max_sat=60_000))
    poll = PollPayments(store, chain, ManualClock(T0), RecordingPublisher(), settings, nodes=nodes)
    address = (await create("zc-held", Satoshis(50_000)))["address"]
    good_fee(chain, chain.pay(address, 50_000))
    events = await poll()   # a safe payment, but one side's mempool may be an attacker's
    assert kinds(events) == ["payment_detected"] and events[0].data["zeroconf_risk"]["score"] == 0
    assert (await ShowOrder(store)("zc-held")).accepted_zeroconf is False


async def test_a_node_that_no_longer_reports_fullrbf_is_full_rbf_from_core_28() -> None:
    """Core 29 removed -mempoolfullrbf (always on); later Cores leave `fullrbf` out of
    getmempoolinfo unless -deprecatedrpc=fullrbf (bitcoin/bitcoin#34911)."""
    from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend

    class Rpc:
        url = "http://127.0.0.1:1"

        def __init__(self, mempool: dict, version: int) -> None:
            self.mempool, self.version = mempool, version

        async def call(self, method: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
            return {"getmempoolinfo": self.mempool, "getnetworkinfo": {"version": self.version}}[method]

    base = {"size": 0, "bytes": 0, "mempoolminfee": "0.00001000"}
    for mempool, version, full in (({**base}, 310000, True), ({**base}, 270100, False),
                                   ({**base, "fullrbf": False}, 280000, False), ({**base, "fullrbf": True}, 0, True)):
        info = await BitcoinCoreBackend(Rpc(mempool, version)).mempool_info()   # type: ignore[arg-type]
        assert info.full_rbf is full, (mempool, version)
