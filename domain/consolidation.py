"""UTXO consolidation: what is worth merging now, and one wallet's consolidation cycle.

A plan spends the wallet's smallest coins (up to a maximum count) to one output of our own
change chain, at today's fee rate. Its *saving* is what it spares later: spending those N
coins at the long-term fee rate would cost N inputs, spending the one merged output costs
one; the consolidation itself costs its fee now:

    saving = (N - 1) x fee of one input at the long-term rate - fee of the consolidation now

A plan with fewer than two coins, a saving that is not positive, or an output that would be
dust is refused (`nothing_to_consolidate`).

`Consolidation` is a wallet's run of the machine in domain/consolidation_state.py: IDLE ->
ANALYZING -> PLANNED -> CONSOLIDATING (its transaction is broadcast) -> COMPLETED (confirmed)
-> IDLE. An analysis that finds nothing goes back to IDLE (`skip`), and so does a plan that is
dropped or whose transaction lost (`abandon`): the machine never waits on a transaction that
will not confirm.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint
from kaccy_bitcoin.domain.coin_selection import Coin, vsize
from kaccy_bitcoin.domain.consolidation_state import ConsolidationMachine, ConsolidationState
from kaccy_bitcoin.domain.errors import ConsolidationInProgress, NothingToConsolidate
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.withdrawals import VOID, Withdrawal

DEFAULT_MAX_INPUTS = 200      # ~14 kvB of P2WPKH inputs: far below the 100 kvB standardness limit
DEFAULT_WALLET = "default"


@attrs.frozen
class ConsolidationPlan:
    wallet: str
    coins: tuple[Coin, ...]
    fee: Satoshis
    saving: Satoshis
    fee_rate: FeeRate

    @property
    def total(self) -> Satoshis:
        return Satoshis(sum(c.amount.value for c in self.coins))

    @property
    def output(self) -> Satoshis:
        return Satoshis(self.total.value - self.fee.value)

    def to_dict(self) -> dict[str, Any]:
        return {"wallet": self.wallet,
                "inputs": [{"txid": c.outpoint.txid.value, "vout": c.outpoint.vout, "amount_sat": c.amount.value}
                           for c in self.coins],
                "fee_sat": self.fee.value, "saving_sat": self.saving.value,
                "fee_rate": sat_per_vb(self.fee_rate)}


def sat_per_vb(rate: FeeRate) -> int | float:
    """A fee rate as the command line takes it: sat/vB, a whole number when it is one."""
    value = rate.sat_per_vb
    return int(value) if value == value.to_integral_value() else float(value)


def plan_consolidation(wallet: str, coins: Sequence[Coin], fee_rate: FeeRate, long_term_rate: FeeRate, *,
                       overhead_weight: int, output_weight: int, output_spend_weight: int, dust_limit: Satoshis,
                       max_inputs: int = DEFAULT_MAX_INPUTS) -> ConsolidationPlan:
    """The smallest coins worth spending at `fee_rate` (at most `max_inputs`), merged into one
    output; NothingToConsolidate when that saves nothing against the long-term rate."""
    if max_inputs < 2:
        raise NothingToConsolidate(f"--max-inputs {max_inputs}: a consolidation merges at least 2 coins")
    worth = sorted((c for c in coins if c.amount.value > fee_rate.fee_for(vsize(c.input_weight)).value),
                   key=lambda c: (c.amount.value, c.outpoint.txid.value, c.outpoint.vout))[:max_inputs]
    if len(worth) < 2:
        raise NothingToConsolidate(
            f"wallet {wallet!r} has {len(worth)} coin(s) worth spending at {fee_rate} "
            f"({len(coins)} unreserved in all): a consolidation needs at least 2")
    weight = overhead_weight + sum(c.input_weight for c in worth) + output_weight
    fee = fee_rate.fee_for(vsize(weight)).value
    later = sum(long_term_rate.fee_for(vsize(c.input_weight)).value for c in worth)
    saving = later - long_term_rate.fee_for(vsize(output_spend_weight)).value - fee
    if saving <= 0:
        raise NothingToConsolidate(
            f"merging {len(worth)} coins of wallet {wallet!r} costs {fee} sat at {fee_rate} and would save "
            f"{saving} sat against spending them at the long-term rate {long_term_rate}: not worth it now")
    total = sum(c.amount.value for c in worth)
    if total - fee < dust_limit.value:
        raise NothingToConsolidate(f"the {len(worth)} coins hold {total} sat: after a {fee} sat fee the output "
                                   f"would be below the dust limit of {dust_limit.value} sat")
    return ConsolidationPlan(wallet, tuple(worth), Satoshis(fee), Satoshis(saving), fee_rate)


@attrs.define
class Consolidation:
    """One wallet's consolidation machine, its current plan's inputs and withdrawal."""

    wallet: str
    machine: ConsolidationMachine = attrs.field(factory=ConsolidationMachine)
    inputs: list[OutPoint] = attrs.field(factory=list)
    withdrawal_id: str | None = None
    version: int = attrs.field(default=0, eq=False)   # storage's optimistic-concurrency token

    @property
    def state(self) -> ConsolidationState:
        return self.machine.state  # type: ignore[return-value]

    @property
    def in_flight(self) -> bool:
        """A withdrawal exists for the current plan and the chain has not decided its fate."""
        return self.withdrawal_id is not None and self.state in (ConsolidationState.PLANNED,
                                                                 ConsolidationState.CONSOLIDATING)

    def analyze(self, at: dt.datetime) -> list[DomainEvent]:
        """Start a new analysis: a completed cycle is closed first, and a plan that never got a
        withdrawal is dropped (the coins may have changed since)."""
        events = []
        if self.state is ConsolidationState.COMPLETED:
            self.machine.fire("reset", at=at, reason="a new analysis")
        elif self.state is ConsolidationState.PLANNED and self.withdrawal_id is None:
            events.append(self.abandon(at, "replaced by a new analysis"))
        if self.in_flight or self.state is ConsolidationState.CONSOLIDATING:
            raise ConsolidationInProgress(
                f"wallet {self.wallet!r}: consolidation withdrawal {self.withdrawal_id} is {self.state.name}; "
                "wait until it confirms (or void it) before planning another")
        self.machine.fire("analyze", at=at)
        return events

    def planned(self, plan: ConsolidationPlan, at: dt.datetime) -> DomainEvent:
        self.machine.fire("plan", at=at, reason=f"{len(plan.coins)} coins, saving {plan.saving.value} sat")
        self.inputs = [c.outpoint for c in plan.coins]
        self.withdrawal_id = None
        return self.event("consolidation_planned", at, **plan.to_dict())

    def skipped(self, why: str, at: dt.datetime) -> DomainEvent:
        self.machine.fire("skip", at=at, reason=why)
        self.inputs, self.withdrawal_id = [], None
        return self.event("consolidation_skipped", at, reason=why)

    def executing(self, withdrawal_id: str) -> None:
        """The plan's withdrawal is recorded (its coins reserved); it is not on the network yet."""
        if self.state is not ConsolidationState.PLANNED:
            raise ConsolidationInProgress(f"wallet {self.wallet!r}: the consolidation is {self.state.name}, "
                                          "not PLANNED")
        self.withdrawal_id = withdrawal_id

    def broadcast(self, txid: str, at: dt.datetime) -> DomainEvent | None:
        if not self.machine.can("broadcast"):
            return None
        self.machine.fire("broadcast", at=at, reason=f"transaction {txid}")
        return self.event("consolidation_broadcast", at, txid=txid)

    def confirmed(self, txid: str, confirmations: int, at: dt.datetime) -> DomainEvent | None:
        if not self.machine.can("confirm"):
            return None
        self.machine.fire("confirm", at=at, reason=f"{confirmations} confirmations")
        return self.event("consolidation_completed", at, txid=txid, confirmations=confirmations)

    def abandon(self, at: dt.datetime, why: str) -> DomainEvent:
        self.machine.fire("abandon", at=at, reason=why)
        event = self.event("consolidation_abandoned", at, reason=why)
        self.inputs, self.withdrawal_id = [], None
        return event

    def event(self, kind: str, at: dt.datetime, **data: Any) -> DomainEvent:
        """An event about this wallet's consolidation; its id names the move it follows."""
        body = {"wallet": self.wallet, "state": self.state.name, "withdrawal_id": self.withdrawal_id, **data}
        return DomainEvent(f"{kind}:{self.wallet}:{len(self.machine.history)}", kind, self.wallet, at, body)

    def view(self) -> dict[str, Any]:
        last = self.machine.history[-1] if self.machine.history else None
        return {"wallet": self.wallet, "state": self.state.name, "withdrawal_id": self.withdrawal_id,
                "inputs": [{"txid": o.txid.value, "vout": o.vout} for o in self.inputs],
                "since": last.at.isoformat() if last else None}


_ON_CHAIN = (PsbtState.CONFIRMED, PsbtState.COMPLETED)
_LOST = (PsbtState.REJECTED, PsbtState.EXPIRED, PsbtState.REPLACED, PsbtState.VOIDED, PsbtState.CONFLICTED)


def follow(c: Consolidation, family: Sequence[Withdrawal], at: dt.datetime) -> list[DomainEvent]:
    """Move `c` along with its withdrawal: `family` is that withdrawal first, then the RBF
    replacements the node accepted in its place. One of them (not a void) in the mempool:
    CONSOLIDATING; confirmed: COMPLETED; the withdrawal settled without any of them on the
    chain (cancelled, expired, voided, conflicted): back to IDLE."""
    events: list[DomainEvent] = []
    ours = [w for w in family if w.kind != VOID]
    won = next((w for w in ours if w.state in _ON_CHAIN and w.txid is not None), None)
    live = won or next((w for w in ours if w.state is PsbtState.BROADCAST and w.txid is not None), None)
    if live is not None:
        moved = c.broadcast(live.txid.value, at)   # type: ignore[union-attr]
        if moved is not None:
            events.append(moved)
        if won is not None:
            moved = c.confirmed(won.txid.value, max(won.confirmations, 1), at)   # type: ignore[union-attr]
            if moved is not None:
                events.append(moved)
        return events
    first = family[0] if family else None
    if first is not None and first.settled and first.state in _LOST:
        events.append(c.abandon(at, f"its withdrawal {first.withdrawal_id} is {first.name}"))
    return events
