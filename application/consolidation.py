"""Use cases of UTXO consolidation: plan, run (through the withdrawal flow), follow, propose.

Every step moves the wallet's consolidation machine (domain/consolidation.py) and commits the
move with its event. `plan` analyses: IDLE -> ANALYZING -> PLANNED (or back to IDLE when there
is nothing worth merging). `run` plans afresh, then executes the plan as a withdrawal of kind
`consolidation` paying one fresh address of our change chain: it is recorded (coins reserved),
signed (`withdraw sign`'s use case), broadcast (`withdraw broadcast`'s), and the machine moves
to CONSOLIDATING. The withdrawal tracker follows the transaction; `FollowConsolidations`, run
in the tracker's own unit of work, moves the machine to COMPLETED once it confirms (or back to
IDLE if it lost). No unit of work is open while the node or a signer is awaited.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Callable, Sequence

import attrs

from kaccy_bitcoin.application.monitor_tick import ItemFailure, MonitorEvents, skipped
from kaccy_bitcoin.application.providers import resolved
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.application.withdrawals import BroadcastWithdrawal, RejectedByNode, SignWithdrawal
from kaccy_bitcoin.domain.coin_selection import DUST_LIMIT, INPUT_WEIGHT, OUTPUT_TYPE_WEIGHT, overhead_weight
from kaccy_bitcoin.domain.consolidation import (
    DEFAULT_MAX_INPUTS,
    DEFAULT_WALLET,
    Consolidation,
    ConsolidationPlan,
    follow,
    plan_consolidation,
    sat_per_vb,
)
from kaccy_bitcoin.domain.consolidation_state import ConsolidationState
from kaccy_bitcoin.domain.errors import CoinsReserved, NothingToConsolidate, UnknownWallet
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.withdrawals import CONSOLIDATION, Withdrawal, WithdrawalInput
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.signer import SignerError
from kaccy_bitcoin.ports.storage import UnitOfWork, UnitOfWorkFactory


@attrs.frozen
class ConsolidationSettings:
    long_term_fee_rate: FeeRate = FeeRate(10_000)   # KACCY_LONG_TERM_FEE_RATE
    propose_above: int = 0                          # KACCY_CONSOLIDATE_ABOVE; 0: the monitor proposes none


class WalletNames:
    """Which wallets exist: `default` (KACCY_XPUB) and those `wallet add` stored."""

    def __init__(self, uow: UnitOfWorkFactory | None = None, names: Sequence[str] = (DEFAULT_WALLET,)) -> None:
        self._uow = uow
        self._names = tuple(names)

    def names(self) -> tuple[str, ...]:
        if self._uow is None:
            return self._names
        with self._uow.read() as uow:
            return self._names + tuple(w.name for w in uow.wallets.all() if w.name not in self._names)

    def require(self, name: str) -> str:
        names = self.names()
        if name not in names:
            raise UnknownWallet(f"no wallet named {name!r}; this deployment has: {', '.join(names)}")
        return name


class PlanConsolidation:
    def __init__(self, builder: WithdrawalBuilder, uow: UnitOfWorkFactory, clock: Clock, wallets: WalletNames,
                 settings: ConsolidationSettings) -> None:
        self._builder, self._uow, self._clock = builder, uow, clock
        self._wallets, self._settings = wallets, settings

    async def __call__(self, wallet: str = DEFAULT_WALLET, max_inputs: int | None = None,
                       fee_rate: FeeRate | None = None) -> dict[str, Any]:
        plan, _ = await self.analyze(wallet, max_inputs, fee_rate)
        return plan.to_dict()

    async def propose(self, wallet: str, fee_rate: FeeRate, max_inputs: int | None = None,
                      ) -> tuple[ConsolidationPlan, dict[Any, WithdrawalInput]]:
        """The plan for the wallet's spendable coins now (nothing recorded)."""
        builder = self._builder.of(wallet)
        coins = {i.outpoint: i for i in await builder.spendable()}
        kind = builder.address_type
        plan = plan_consolidation(
            wallet, [builder.coin(i) for i in coins.values()], fee_rate, self._settings.long_term_fee_rate,
            overhead_weight=overhead_weight(kind), output_weight=OUTPUT_TYPE_WEIGHT[kind],
            output_spend_weight=INPUT_WEIGHT[kind], dust_limit=Satoshis(DUST_LIMIT[kind]),
            max_inputs=DEFAULT_MAX_INPUTS if max_inputs is None else max_inputs)
        return plan, coins

    async def analyze(self, wallet: str, max_inputs: int | None, fee_rate: FeeRate | None,
                      ) -> tuple[ConsolidationPlan, list[WithdrawalInput]]:
        """IDLE -> ANALYZING -> PLANNED with the plan, or back to IDLE (NothingToConsolidate)."""
        self._wallets.require(wallet)
        rate = await self._builder.fee_rate(fee_rate)
        try:
            plan, coins = await self.propose(wallet, rate, max_inputs)
            why = None
        except NothingToConsolidate as exc:
            plan, why = None, str(exc)
        now = self._clock.now()
        async with self._uow() as uow:
            c = uow.consolidations.get(wallet) or Consolidation(wallet)
            events = c.analyze(now)
            events.append(c.skipped(why, now) if plan is None else c.planned(plan, now))
            uow.consolidations.save(c)
            uow.record(events)
            uow.commit()
        if plan is None:
            raise NothingToConsolidate(why)
        return plan, [coins[coin.outpoint] for coin in plan.coins]


class RunConsolidation:
    def __init__(self, planner: PlanConsolidation, builder: WithdrawalBuilder, uow: UnitOfWorkFactory,
                 clock: Clock, signing: SignWithdrawal, broadcasting: BroadcastWithdrawal) -> None:
        self._planner, self._builder, self._uow, self._clock = planner, builder, uow, clock
        self._signing, self._broadcasting = signing, broadcasting

    async def __call__(self, wallet: str = DEFAULT_WALLET, max_inputs: int | None = None,
                       fee_rate: FeeRate | None = None, signer_name: str = "software") -> dict[str, Any]:
        await self._signing.signer(signer_name)      # an unknown or unconfigured signer: refused before any move
        plan, inputs = await self._planner.analyze(wallet, max_inputs, fee_rate)
        w = await self._builder.of(wallet).propose_sweep(uuid.uuid4().hex, inputs, plan.fee)
        w.kind = CONSOLIDATION
        try:
            async with self._uow() as uow:
                uow.reservations.reserve(w.outpoints(), w.withdrawal_id, self._clock.now())
                uow.withdrawals.save(w)
                c = _load(uow, wallet)
                c.executing(w.withdrawal_id)
                uow.consolidations.save(c)
                uow.commit()
        except CoinsReserved:
            await self._abandon(wallet, "a coin of the plan was reserved by a withdrawal meanwhile")
            raise
        try:
            signed = await self._signing(w.withdrawal_id, signer_name)
            if signed["state"] != "signed":
                raise SignerError(f"signer {signer_name} could not sign every input of consolidation "
                                  f"{w.withdrawal_id}; it was cancelled and nothing was sent")
        except Exception:
            await self._abandon(wallet, "signing failed", cancel=w.withdrawal_id)
            raise
        try:
            sent = await self._broadcasting(w.withdrawal_id)
        except RejectedByNode:
            await self._abandon(wallet, "the node rejected its transaction")
            raise
        async with self._uow() as uow:
            c = _load(uow, wallet)
            event = c.broadcast(sent["txid"], self._clock.now()) if c.withdrawal_id == w.withdrawal_id else None
            if event is not None:
                uow.consolidations.save(c)
                uow.record([event])
                uow.commit()
        return {"withdrawal_id": w.withdrawal_id, "txid": sent["txid"], "state": sent["state"]}

    async def _abandon(self, wallet: str, why: str, cancel: str | None = None) -> None:
        """Back to IDLE; `cancel`: the unsigned withdrawal to cancel, its coins released."""
        now = self._clock.now()
        async with self._uow() as uow:
            c = _load(uow, wallet)
            if cancel is not None:
                w = uow.withdrawals.get(cancel)
                if w is not None and not w.ever_signed:
                    w.cancel(now)
                    w.settled = True
                    uow.reservations.release(cancel)
                    uow.withdrawals.save(w)
            if c.state is ConsolidationState.PLANNED:
                uow.record([c.abandon(now, why)])
                uow.consolidations.save(c)
            uow.commit()


class ShowConsolidation:
    def __init__(self, uow: UnitOfWorkFactory, wallets: WalletNames) -> None:
        self._uow, self._wallets = uow, wallets

    async def __call__(self, wallet: str = DEFAULT_WALLET) -> dict[str, Any]:
        self._wallets.require(wallet)
        with self._uow.read() as uow:
            c = uow.consolidations.get(wallet) or Consolidation(wallet)
        return c.view()


class FollowConsolidations:
    """Run by the withdrawal tracker inside its unit of work, after it saved what the chain
    changed: moves each consolidation in flight along with its withdrawal (and the replacements
    of that withdrawal)."""

    def __call__(self, uow: UnitOfWork, at: dt.datetime) -> list[DomainEvent]:
        events: list[DomainEvent] = []
        for c in uow.consolidations.in_flight():
            family = _replacements(uow, c.withdrawal_id)   # type: ignore[arg-type]
            moved = follow(c, family, at)
            if moved:
                uow.consolidations.save(c)
                events.extend(moved)
        return events


class ProposeConsolidation:
    """A monitor step: when a wallet holds more than `propose_above` spendable coins and the
    fee rate a consolidation would pay now is below the long-term rate, publish
    `consolidation_proposed` with the plan (at most once a day per position of the wallet's
    machine, and never while a consolidation is under way). Nothing is moved or spent."""

    def __init__(self, planner: Callable[[], PlanConsolidation], builder: Callable[[], WithdrawalBuilder],
                 uow: UnitOfWorkFactory, clock: Clock, publisher: EventPublisher, wallets: WalletNames,
                 settings: ConsolidationSettings) -> None:
        """`planner` and `builder` make one when first needed (a monitor that proposes nothing
        needs no keys)."""
        self._planner, self._builder, self._uow, self._clock = planner, builder, uow, clock
        self._publisher, self._wallets, self._settings = publisher, wallets, settings

    async def __call__(self) -> MonitorEvents:
        if self._settings.propose_above <= 0:
            return MonitorEvents()
        planner, builder = await resolved(self._planner()), await resolved(self._builder())
        committed: list[DomainEvent] = []
        failed: list[ItemFailure] = []
        for wallet in self._wallets.names():
            try:
                committed.extend(await self._propose(planner, builder, wallet))
            except Exception as exc:  # noqa: BLE001 - this wallet is skipped; the others go on
                failed.append(skipped("propose_consolidation", wallet, exc))
                failed[-1].log()
        await self._publisher.publish(committed)
        return MonitorEvents(committed, failed)

    async def _propose(self, planner: PlanConsolidation, builder: WithdrawalBuilder,
                       wallet: str) -> list[DomainEvent]:
        """Propose a consolidation of `wallet` if one is due; the events committed."""
        rate = await builder.fee_rate(None)
        if rate >= self._settings.long_term_fee_rate:
            return []
        try:
            plan, coins = await planner.propose(wallet, rate)
        except NothingToConsolidate:
            return []
        if len(coins) <= self._settings.propose_above:
            return []
        now = self._clock.now()
        async with self._uow() as uow:
            c = uow.consolidations.get(wallet) or Consolidation(wallet)
            if c.state in (ConsolidationState.PLANNED, ConsolidationState.CONSOLIDATING):
                return []
            body = {**plan.to_dict(), "utxo_count": len(coins), "state": c.state.name,
                    "long_term_fee_rate": sat_per_vb(self._settings.long_term_fee_rate)}
            uow.record([DomainEvent(f"consolidation_proposed:{wallet}:{len(c.machine.history)}:"
                                    f"{now.date().isoformat()}", "consolidation_proposed", wallet, now, body)])
            uow.commit()
        return uow.committed_events()


def _load(uow: UnitOfWork, wallet: str) -> Consolidation:
    c = uow.consolidations.get(wallet)
    if c is None:
        raise NothingToConsolidate(f"wallet {wallet!r} has no consolidation plan")
    return c


def _replacements(uow: UnitOfWork, withdrawal_id: str) -> list[Withdrawal]:
    """The withdrawal and the chain of replacements the node accepted in its place."""
    family: list[Withdrawal] = []
    current = uow.withdrawals.get(withdrawal_id)
    while current is not None and all(w.withdrawal_id != current.withdrawal_id for w in family):
        family.append(current)
        current = uow.withdrawals.get(current.replaced_by) if current.replaced_by else None
    return family
