"""The withdrawal rules without a node: what cancel, void and bump allow, and random chain
histories against a family (an original, its RBF replacement and its void)."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.chain import WalletTransaction
from kaccy_bitcoin.domain.errors import WithdrawalStateError
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.withdrawal_tracking import ForeignSpend, apply_chain
from kaccy_bitcoin.domain.withdrawals import VOID, Withdrawal, WithdrawalInput, WithdrawalOutput

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
FINAL = 6


def withdrawal(wid: str, txid: str, replaces: str | None = None, kind: str = "payout") -> Withdrawal:
    w = Withdrawal(wid, T0, [WithdrawalInput(OutPoint(Txid("aa" * 32), 0), Satoshis(10_000))],
                   [WithdrawalOutput("addr", Satoshis(9_000))], Satoshis(1_000), "psbt",
                   txid=Txid(txid * 32), replaces=replaces, kind=kind)
    return w


def signed(w: Withdrawal) -> Withdrawal:
    w.record_signatures("psbt", True, T0, "software")
    return w


def broadcast(w: Withdrawal) -> Withdrawal:
    signed(w).finalize("psbt", w.txid, T0)  # type: ignore[arg-type]
    w.mark_broadcast(T0)
    return w


def view(txid: Txid, confirmations: int, in_mempool: bool = False, conflicts: tuple[Txid, ...] = ()
         ) -> WalletTransaction:
    return WalletTransaction(txid, confirmations, in_mempool, "b" * 64 if confirmations > 0 else None,
                             wallet_conflicts=conflicts)


def test_cancel_only_before_signing_and_void_only_after() -> None:
    w = withdrawal("w", "bb")
    with pytest.raises(WithdrawalStateError, match="nothing was signed, use `withdraw cancel`"):
        w.require_voidable()
    w.cancel(T0)
    assert w.state is PsbtState.REJECTED and not w.ever_signed
    for make in (signed, lambda x: signed(x).finalize("psbt", x.txid, T0) or x, broadcast):
        w = withdrawal("w", "bb")
        make(w)
        with pytest.raises(WithdrawalStateError, match="use `withdraw void`"):
            w.cancel(T0)
        w.require_voidable()
    w = broadcast(withdrawal("w", "bb"))
    assert w.require_bumpable() == Txid("bb" * 32)
    w.replaced_by = "w2"
    with pytest.raises(WithdrawalStateError, match="already replaced by w2"):
        w.require_bumpable()


def test_expiry_gives_back_only_what_was_never_signed() -> None:
    late = T0 + dt.timedelta(days=2)
    assert withdrawal("a", "bb").expire(late, 3600).kind == "withdrawal_expired"
    assert signed(withdrawal("b", "cc")).expire(late, 3600) is None


def test_seen_from_any_recorded_state_moves_to_broadcast_and_confirmed() -> None:
    for prepare in (lambda w: w, lambda w: w.cancel(T0) or w, signed):
        w = prepare(withdrawal("w", "bb"))
        out = apply_chain([w], {w.txid: view(w.txid, 2)}, {}, FINAL, T0)  # type: ignore[index, arg-type]
        assert w.state is PsbtState.CONFIRMED and w.confirmations == 2
        assert [e.kind for e in out.events] == ["withdrawal_broadcast", "withdrawal_confirmed"]
        assert out.release == set()
        with pytest.raises(WithdrawalStateError):
            w.cancel(T0)


def test_a_foreign_spend_conflicts_and_settles_when_final() -> None:
    w = signed(withdrawal("w", "bb"))
    rival = Txid("ee" * 32)
    out = apply_chain([w], {w.txid: None}, {"w": ForeignSpend(rival, 1)}, FINAL, T0)  # type: ignore[dict-item]
    assert w.state is PsbtState.CONFLICTED and w.conflicted_by == rival and not w.settled
    assert out.release == set() and [e.kind for e in out.events] == ["withdrawal_conflicted"]
    out = apply_chain([w], {w.txid: None, rival: view(rival, FINAL)}, {}, FINAL, T0)  # type: ignore[dict-item]
    assert w.settled and out.release == {"w"}


class FamilyHistory(RuleBasedStateMachine):
    """An original (broadcast), its replacement and its void (both signed); the chain confirms,
    reorgs, drops and re-mines them at random. At most one can be on the chain; nothing that
    was signed gives its coins back before the chain's verdict is final."""

    def __init__(self) -> None:
        super().__init__()
        self.members = [broadcast(withdrawal("orig", "11")),
                        signed(withdrawal("bump", "22", replaces="orig")),
                        signed(withdrawal("void", "33", replaces="orig", kind=VOID))]
        self.views: dict[Txid, WalletTransaction | None] = {m.txid: None for m in self.members}
        self.views[self.members[0].txid] = view(self.members[0].txid, 0, True)  # type: ignore[index]
        self.released: set[str] = set()
        self.at = T0

    def _apply(self) -> None:
        self.at += dt.timedelta(minutes=10)
        out = apply_chain(self.members, self.views, {}, FINAL, self.at)
        self.released |= out.release
        self.last = out

    def _not_final(self) -> bool:
        """Reorgs deeper than the final threshold are outside the model (that is what final means)."""
        return not any(m.settled for m in self.members)

    @precondition(_not_final)
    @rule(winner=st.integers(0, 2), depth=st.integers(1, 8))
    def confirm(self, winner: int, depth: int) -> None:
        won = self.members[winner].txid
        for m in self.members:
            self.views[m.txid] = (view(m.txid, depth) if m.txid == won
                                  else view(m.txid, -depth, conflicts=(won,)))  # type: ignore[arg-type]
        self._apply()

    @precondition(_not_final)
    @rule(in_mempool=st.sampled_from([0, 1, 2, None]))
    def unconfirm_all(self, in_mempool: int | None) -> None:
        for n, m in enumerate(self.members):
            self.views[m.txid] = view(m.txid, 0, n == in_mempool)  # type: ignore[index]
        self._apply()

    @rule()
    def another_tick(self) -> None:
        """The chain stays as it is; applying it again changes nothing."""
        before = [(m.state, m.settled, m.confirmations) for m in self.members]
        self._apply()
        assert [(m.state, m.settled, m.confirmations) for m in self.members] == before
        assert self.last.events == []

    @invariant()
    def at_most_one_on_chain(self) -> None:
        on_chain = [m for m in self.members if m.state in (PsbtState.CONFIRMED, PsbtState.COMPLETED)]
        assert len(on_chain) <= 1

    @invariant()
    def released_only_when_final(self) -> None:
        for m in self.members:
            if m.withdrawal_id in self.released:
                assert m.settled
                assert m.state is PsbtState.COMPLETED or m.state in (PsbtState.REPLACED, PsbtState.VOIDED)

    @invariant()
    def losers_follow_the_winner(self) -> None:
        on_chain = [m for m in self.members if m.state in (PsbtState.CONFIRMED, PsbtState.COMPLETED)]
        if on_chain:
            lost = PsbtState.VOIDED if on_chain[0].kind == VOID else PsbtState.REPLACED
            assert all(m.state is lost for m in self.members if m is not on_chain[0])


TestFamilyHistory = FamilyHistory.TestCase
TestFamilyHistory.settings = settings(max_examples=60, stateful_step_count=20, deadline=None)
