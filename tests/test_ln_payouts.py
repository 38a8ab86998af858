"""Lightning payouts: the domain's claim and fee cap, and their storage over every adapter
(memory, SQLite, PostgreSQL when configured), with the limit claim lowered to what was paid."""
from __future__ import annotations

import datetime as dt

import pytest

from kaccy_bitcoin.domain.errors import ConcurrentUpdate, FeeTooHigh, InvalidAmount, WithdrawalHeld
from kaccy_bitcoin.domain.custody import CustodyPolicy, TierExceeded
from kaccy_bitcoin.domain.limits import Usage
from kaccy_bitcoin.domain.lightning import LightningPayment, PaymentStatus
from kaccy_bitcoin.domain.lightning_payouts import LightningPayout, fee_limit
from kaccy_bitcoin.domain.money import MilliSatoshis
from kaccy_bitcoin.domain.risk import RiskAssessment

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
HASH = "ab" * 32
NODE = "02" + "cd" * 32


def payout(amount_msat: int = 10_000_500, max_fee_msat: int = 50_000) -> LightningPayout:
    return LightningPayout("p-1", "lnbcrt1...", HASH, NODE, MilliSatoshis(amount_msat), MilliSatoshis(max_fee_msat),
                           T0, user="u")


def test_the_fee_limit_is_capped_in_ppm_of_the_amount() -> None:
    amount = MilliSatoshis(20_000_000)
    assert fee_limit(amount, None, 5_000) == MilliSatoshis(100_000)          # none given: the cap
    assert fee_limit(amount, 100, 5_000) == MilliSatoshis(100_000)
    with pytest.raises(FeeTooHigh) as refused:
        fee_limit(amount, 101, 5_000)
    assert refused.value.details() == {"max_fee_sat": 100, "max_fee_msat": 100_000}
    with pytest.raises(InvalidAmount):
        fee_limit(amount, -1, 5_000)


def test_the_claim_is_amount_plus_fee_limit_rounded_up_then_what_was_paid() -> None:
    p = payout()
    assert p.claim_sat == 10_051                                              # 10,050.5 sat up
    p.send(T0)
    p.settle(LightningPayment(HASH, PaymentStatus.SUCCEEDED, MilliSatoshis(10_000_500), MilliSatoshis(1_001),
                              preimage="ef" * 32), T0)
    assert (p.name, p.claim_sat, p.pays_nothing) == ("succeeded", 10_002, False)   # 10,001.501 sat up
    with pytest.raises(InvalidAmount):
        payout(amount_msat=0)


def test_a_held_payout_is_not_sent_until_approved() -> None:
    p = payout()
    assert p.review(RiskAssessment.of(["new_destination"]), 15, T0).kind == "ln_payment_held"
    with pytest.raises(WithdrawalHeld):
        p.send(T0)
    p.approve("olivia", T0)
    assert p.send(T0).kind == "ln_payment_sent" and p.send(T0) is None          # asked again: no move
    event = p.settle(LightningPayment(HASH, PaymentStatus.FAILED, MilliSatoshis(10_000_500), MilliSatoshis(0),
                                      failure_reason="FAILURE_REASON_NO_ROUTE"), T0)
    assert event.kind == "ln_payment_failed" and p.pays_nothing


def test_lightning_is_held_to_the_hot_tiers_cap() -> None:
    policy = CustodyPolicy.parse("hot=default:100000,cold=vault")
    policy.check_lightning(100_000)
    with pytest.raises(TierExceeded) as refused:
        policy.check_lightning(100_001)
    assert (refused.value.tier, refused.value.wallet) == ("hot", "lightning")
    CustodyPolicy().check_lightning(10**12)


def test_payout_round_trip_versions_and_claim_adjustment(uow_factory) -> None:  # noqa: ANN001
    p = payout()
    p.review(RiskAssessment.of(["new_destination"]), 15, T0)
    with uow_factory() as u:
        u.ln_payouts.add(p)
        u.limits.take(Usage("p-1", "u", p.claim_sat, T0, destinations=(NODE,)))
        u.commit()
    with uow_factory() as u:
        loaded = u.ln_payouts.get("p-1")
        assert (loaded.name, loaded.risk, loaded.amount, loaded.max_fee, loaded.user) == (
            "held", p.risk, p.amount, p.max_fee, "u")
        assert loaded.machine.history == p.machine.history and loaded.created_at == T0
        assert [x.payment_id for x in u.ln_payouts.for_hash(HASH)] == ["p-1"] and u.ln_payouts.for_hash("0" * 64) == []
        loaded.approve("olivia", T0)
        u.ln_payouts.save(loaded)
        u.limits.adjust("p-1", 10_002)
        u.limits.adjust("p-1", 20_000)                                       # never more than it took
        u.commit()
    with pytest.raises(ConcurrentUpdate):
        with uow_factory() as u:
            u.ln_payouts.save(p)                                              # a stale version
    with uow_factory() as u:
        assert u.ln_payouts.get("p-1").approved_by == "olivia"
        assert [x.amount_sat for x in u.limits.user_usage("u", T0)] == [10_002]
        with pytest.raises(ConcurrentUpdate):
            u.ln_payouts.add(payout())
