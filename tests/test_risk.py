"""The risk review's rules (domain/risk.py): each fires on its own, weights add up, at most 100."""
from __future__ import annotations

import datetime as dt

from kaccy_bitcoin.domain.limits import Limits, Usage
from kaccy_bitcoin.domain.risk import NO_RISK, RiskAssessment, assess
from kaccy_bitcoin.domain.withdrawals import Withdrawal
from kaccy_bitcoin.domain.money import Satoshis

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
A, B, OURS = "bcrt1q-a", "bcrt1q-b", "bcrt1q-ours"


def past(n: int, amount: int, ago: dt.timedelta, dest: str = A) -> Usage:
    return Usage(f"w{n}", "u", amount, T0 - ago, destinations=(dest,))


def risk(amount: int, dests=(A,), user="u", history=(), own=(), limits=None) -> RiskAssessment:  # noqa: ANN001
    return assess(amount, list(dests), T0, user=user, history=list(history), own_addresses=own, limits=limits)


def test_an_ordinary_withdrawal_scores_nothing() -> None:
    assert risk(1000, history=[past(1, 900, dt.timedelta(days=2))]) == NO_RISK


def test_each_rule_on_its_own() -> None:
    day = dt.timedelta(days=2)
    assert risk(1000, dests=(OURS,), user=None, own=(OURS,)).to_dict() == {
        "score": 70, "reasons": ["own_deposit_address"]}
    assert risk(5001, history=[past(1, 1000, day)]).reasons == ("large_amount",)
    assert risk(1000, history=[past(1, 1000, dt.timedelta(seconds=30))]).reasons == ("rapid_succession",)
    five = [past(n, 1000, dt.timedelta(minutes=5 + n)) for n in range(5)]
    assert risk(1000, history=five).reasons == ("velocity",)
    assert risk(1000, history=[past(1, 1000, day)], limits=Limits("u", single_max_sat=1100)).reasons == (
        "near_limit",)
    assert risk(1000, dests=(B,), history=[past(1, 1000, day)]).to_dict() == {
        "score": 15, "reasons": ["new_destination"]}


def test_scores_add_up_to_at_most_100_and_reasons_keep_their_order() -> None:
    burst = [past(n, 100, dt.timedelta(seconds=10 * n)) for n in range(1, 6)]
    found = risk(10_000, dests=(B, OURS), history=burst, own=(OURS,), limits=Limits("u", daily_sat=10_500))
    assert found.reasons == ("own_deposit_address", "large_amount", "rapid_succession", "velocity", "near_limit",
                             "new_destination")
    assert found.score == 100 and found.held(70)
    assert risk(10_000, dests=(B,), history=[past(1, 100, dt.timedelta(seconds=10))]).to_dict() == {
        "score": 75, "reasons": ["large_amount", "rapid_succession", "new_destination"]}


def test_without_a_user_only_our_own_addresses_count() -> None:
    assert risk(10**8, dests=(B,), user=None) == NO_RISK


def test_a_held_withdrawal_cannot_be_signed_until_approved() -> None:
    import pytest

    from kaccy_bitcoin.domain.errors import WithdrawalHeld, WithdrawalStateError

    w = Withdrawal("w1", T0, [], [], Satoshis(100), "psbt")
    held = w.review(RiskAssessment.of(["own_deposit_address"]), 70, T0)
    assert held is not None and held.kind == "withdrawal_held" and held.is_discrepancy and w.name == "held"
    with pytest.raises(WithdrawalHeld) as refused:
        w.require_signable()
    assert refused.value.code == "withdrawal_held"
    approved = w.approve("alice", T0)
    assert (approved.actor, w.name, w.approved_by) == ("alice", "created", "alice")
    w.require_signable()
    with pytest.raises(WithdrawalStateError):
        w.approve("alice", T0)
    assert Withdrawal("w2", T0, [], [], Satoshis(100), "p").review(RiskAssessment.of(["velocity"]), 70, T0) is None


def test_only_what_is_certain_not_to_pay_gives_its_amount_back() -> None:
    def withdrawal(*triggers: str) -> Withdrawal:
        w = Withdrawal("w", T0, [], [], Satoshis(100), "p")
        for trigger in triggers:
            w.machine.fire(trigger, at=T0)
        return w

    assert withdrawal("cancel").pays_nothing and withdrawal("hold", "cancel").pays_nothing
    assert withdrawal("expire").pays_nothing and withdrawal("replace").pays_nothing
    assert withdrawal("complete_signatures", "void").pays_nothing
    assert not withdrawal("complete_signatures", "finalize", "reject").pays_nothing   # signed: may still confirm
    assert not withdrawal("complete_signatures", "replace").pays_nothing              # its replacement pays them
    assert not withdrawal("complete_signatures", "conflict").pays_nothing
    assert not withdrawal().pays_nothing and not withdrawal("hold").pays_nothing
