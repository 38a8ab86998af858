"""What the chain says about our withdrawals, applied to them: pure rules, no I/O.

A family (a withdrawal, its RBF replacements and its void) spends overlapping inputs, so
at most one member confirms. Until one does, every member that was ever signed keeps its
coins; once one does, the others lost (REPLACED, or VOIDED when the winner is the void).
A transaction that is none of ours spending one of our inputs makes a withdrawal
CONFLICTED. A verdict is *settled* once the deciding transaction is `final` blocks deep:
the withdrawal is then no longer watched and its remaining coin reservations can go.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable, Mapping, Sequence

import attrs

from kaccy_bitcoin.domain.bitcoin import Txid
from kaccy_bitcoin.domain.chain import WalletTransaction
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.psbt_state import UNSIGNED, PsbtState
from kaccy_bitcoin.domain.withdrawals import VOID, Withdrawal


@attrs.frozen
class ForeignSpend:
    """A transaction that is none of our withdrawals and spends one of this withdrawal's inputs."""

    txid: Txid
    confirmations: int


@attrs.define
class Verdicts:
    """The outcome of applying the chain to a set of withdrawals."""

    events: list[DomainEvent] = attrs.field(factory=list)
    changed: dict[str, Withdrawal] = attrs.field(factory=dict)
    release: set[str] = attrs.field(factory=set)        # withdrawals whose coin reservations can go
    lost_from_mempool: list[Withdrawal] = attrs.field(factory=list)   # broadcast, but nowhere now
    waiting: list[Withdrawal] = attrs.field(factory=list)             # broadcast, in the mempool

    def moved(self, w: Withdrawal, event: DomainEvent | None = None) -> None:
        self.changed[w.withdrawal_id] = w
        if event is not None:
            self.events.append(event)


def families(withdrawals: Iterable[Withdrawal]) -> list[list[Withdrawal]]:
    """Group withdrawals by the root of their `replaces` chain (members missing from the
    input are simply absent from their family)."""
    by_id = {w.withdrawal_id: w for w in withdrawals}
    groups: dict[str, list[Withdrawal]] = {}
    for w in by_id.values():
        root, seen = w, {w.withdrawal_id}
        while root.replaces and root.replaces in by_id and root.replaces not in seen:
            seen.add(root.replaces)
            root = by_id[root.replaces]
        groups.setdefault(root.withdrawal_id, []).append(w)
    return [sorted(g, key=lambda w: w.created_at) for g in groups.values()]


def apply_chain(withdrawals: Sequence[Withdrawal], views: Mapping[Txid, WalletTransaction | None],
                foreign: Mapping[str, ForeignSpend], final: int, at: dt.datetime) -> Verdicts:
    """Move each withdrawal to where the chain says it is. `views` holds the wallet's view of
    every txid involved (ours and the ones that beat ours); `foreign` maps a withdrawal id to a
    transaction of someone else's that spent one of its inputs."""
    out = Verdicts()
    for family in families(withdrawals):
        _apply_family(family, views, foreign, final, at, out)
    by_id = {w.withdrawal_id: w for w in withdrawals}
    for w in withdrawals:   # a CPFP child whose parent lost can never confirm either
        parent = by_id.get(w.child_of or "")
        if parent is not None and parent.state in (PsbtState.REPLACED, PsbtState.VOIDED, PsbtState.CONFLICTED):
            _lose(w, "conflict", parent.conflicted_by, parent.settled, at, out, reason="its parent lost")
    return out


def _depth(views: Mapping[Txid, WalletTransaction | None], txid: Txid | None) -> int | None:
    view = views.get(txid) if txid is not None else None
    return None if view is None else view.confirmations


def _apply_family(family: list[Withdrawal], views: Mapping[Txid, WalletTransaction | None],
                  foreign: Mapping[str, ForeignSpend], final: int, at: dt.datetime, out: Verdicts) -> None:
    confirmed = [(d, w) for w in family if (d := _depth(views, w.txid)) is not None and d > 0]
    winner = max(confirmed, key=lambda x: x[0])[1] if confirmed else None
    for w in family:
        if winner is not None:
            if w is winner:
                _confirmed(w, views[w.txid].confirmations, final, at, out)  # type: ignore[index, union-attr]
            else:
                depth = views[winner.txid].confirmations   # type: ignore[index, union-attr]
                voided = winner.kind == VOID and w.kind != VOID   # a void that lost to a bump of it was replaced
                _lose(w, "void" if voided else "replace", winner.txid, depth >= final, at, out,
                      by=winner.withdrawal_id)
            continue
        view = views.get(w.txid) if w.txid is not None else None
        spend = foreign.get(w.withdrawal_id)
        if view is not None and view.confirmations == 0 and view.in_mempool:
            _in_mempool(w, at, out)
        elif view is not None and view.confirmations < 0:
            rival = next(iter(view.wallet_conflicts), None) or (spend.txid if spend else w.conflicted_by)
            _lose(w, "conflict", rival, -view.confirmations >= final, at, out)
        elif spend is not None and spend.confirmations > 0:
            _lose(w, "conflict", spend.txid, spend.confirmations >= final, at, out)
        elif w.state is PsbtState.CONFLICTED and w.conflicted_by is not None:
            depth = _depth(views, w.conflicted_by)
            if depth is None or depth <= 0:     # what beat it left the chain: it may come back
                if w.chain_moves("seen", at, "the conflicting transaction left the chain"):
                    w.conflicted_by, w.settled = None, False
                    out.moved(w, w.event("withdrawal_reorged", at, reason="conflict undone"))
                    out.lost_from_mempool.append(w)
            elif depth >= final and not w.settled:
                w.settled = True
                out.release.add(w.withdrawal_id)
                out.moved(w)
        else:
            _nowhere(w, at, out)


def _confirmed(w: Withdrawal, depth: int, final: int, at: dt.datetime, out: Verdicts) -> None:
    if w.state not in (PsbtState.BROADCAST, PsbtState.CONFIRMED, PsbtState.COMPLETED):
        if w.chain_moves("seen", at, "its transaction is in a block"):
            out.moved(w, w.event("withdrawal_broadcast", at, confirmations=depth, seen_by="chain"))
            w.conflicted_by, w.settled = None, False
    if w.chain_moves("confirm", at, f"{depth} confirmations"):
        w.confirmations = depth
        out.moved(w, w.event("withdrawal_confirmed", at, confirmations=depth))
    if w.confirmations != depth:
        w.confirmations = depth
        out.moved(w)
    if depth >= final and w.chain_moves("complete", at, f"{depth} confirmations"):
        w.settled = True
        out.release.add(w.withdrawal_id)
        out.moved(w, w.event("withdrawal_completed", at, confirmations=depth))


def _in_mempool(w: Withdrawal, at: dt.datetime, out: Verdicts) -> None:
    if w.state is PsbtState.CONFIRMED:
        w.chain_moves("unconfirm", at, "its block left the chain; back in the mempool")
        w.confirmations = 0
        out.moved(w, w.event("withdrawal_reorged", at, confirmations=0))
    elif w.state is not PsbtState.BROADCAST:
        was = w.name
        if w.chain_moves("seen", at, f"in the mempool while {was}"):
            w.conflicted_by, w.settled = None, False
            out.moved(w, w.event("withdrawal_broadcast", at, confirmations=0, seen_by="mempool", was=was))
    if w.state is PsbtState.BROADCAST:
        out.waiting.append(w)


def _nowhere(w: Withdrawal, at: dt.datetime, out: Verdicts) -> None:
    """Neither confirmed, in the mempool, nor beaten: evicted, forgotten, or never sent."""
    if w.state is PsbtState.CONFIRMED:
        w.chain_moves("unconfirm", at, "its block left the chain")
        w.confirmations = 0
        out.moved(w, w.event("withdrawal_reorged", at, confirmations=0))
    if w.state is PsbtState.BROADCAST:
        out.lost_from_mempool.append(w)


_LOST = {"void": (PsbtState.VOIDED, "withdrawal_voided"), "replace": (PsbtState.REPLACED, "withdrawal_replaced"),
         "conflict": (PsbtState.CONFLICTED, "withdrawal_conflicted")}


def _lose(w: Withdrawal, trigger: str, rival: Txid | None, settled: bool, at: dt.datetime, out: Verdicts,
          by: str | None = None, reason: str = "") -> None:
    """Another transaction (`rival`, from sibling `by` or a stranger) won over `w`'s."""
    target, kind = _LOST[trigger]
    never_signed = w.state.value in UNSIGNED
    if w.state is not target:
        if w.state in (PsbtState.REPLACED, PsbtState.VOIDED, PsbtState.CONFLICTED):
            w.chain_moves("seen", at, "the chain changed its verdict")   # a reorg swapped the winner
        if w.chain_moves(trigger, at, reason or (f"{by} confirmed" if by else f"spent by {rival}")):
            w.conflicted_by, w.confirmations = rival, 0
            out.moved(w, w.event(kind, at, by=by, conflicting_txid=rival.value if rival else None))
    if w.state is target and not w.settled and (settled or never_signed):
        w.settled = True    # final, or there never was a transaction of its own to watch
        out.release.add(w.withdrawal_id)
        out.moved(w)
