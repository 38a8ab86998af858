"""Fee bumping for broadcast withdrawals: RBF replacement (BIP125) and CPFP."""
from __future__ import annotations

import uuid
from typing import Any, Sequence

from kaccy_bitcoin.application.retry import retried
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.application.withdrawals import (
    bip125_minimum,
    fee_too_low,
    lineage,
    load_withdrawal,
    read_withdrawal,
    record_new,
    save_new,
    view,
)
from kaccy_bitcoin.application.transaction_manager import (
    ControlSettings,
    assess_payout,
    check_limits,
    own_deposit_addresses,
)
from kaccy_bitcoin.domain.custody import CustodyPolicy
from kaccy_bitcoin.domain.limits import Usage
from kaccy_bitcoin.domain.bitcoin import Address
from kaccy_bitcoin.domain.errors import CoinsReserved, InvalidAmount
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.domain.withdrawals import CPFP, VOID
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory


class BumpWithdrawal:
    """RBF (BIP125): a new withdrawal spending the same inputs (plus more if needed), paying
    the same payouts (and, for a batch RBF, new ones: a new payout, through the transaction
    manager's controls: the original's user's and the platform's limits, where they are counted,
    the risk review of the new destinations (a risky one is HELD until an operator approves it),
    and the paying wallet's tier cap on everything the replacement pays out) at a higher fee rate.
    The original keeps its coins and stays as it is until the node accepts the replacement; the
    replacement holds only the coins it adds, so cancelling it leaves the original exactly as it was.
    The replacement of a void is a void (same coins back to our change chain): when it confirms,
    the original is `voided` and its limit usage is given back."""

    def __init__(self, builder: WithdrawalBuilder, uow: UnitOfWorkFactory, chain: ChainBackend,
                 clock: Clock, publisher: EventPublisher, controls: ControlSettings,
                 custody: CustodyPolicy | None = None) -> None:
        self._builder, self._uow, self._chain, self._clock = builder, uow, chain, clock
        self._publisher, self._controls, self._custody = publisher, controls, custody or CustodyPolicy()

    async def __call__(self, withdrawal_id: str, fee_rate: FeeRate,
                       add_payouts: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
        """`add_payouts` makes it a batch RBF: the replacement also pays these."""
        extra_payouts = self._builder.parse_payouts(add_payouts) if add_payouts else []
        added = sum(v.value for _, v in extra_payouts)
        added_to = tuple(a.value for a, _ in extra_payouts)
        with self._uow.read() as uow:
            old = load_withdrawal(uow, withdrawal_id)
            txid = old.require_bumpable()
            if old.replacement_kind() == VOID and extra_payouts:
                raise InvalidAmount(f"withdrawal {withdrawal_id} is a void: it pays nothing out, so its "
                                    "replacement cannot pay anyone either")
            holders = lineage(uow, old)
            payouts = [(Address(o.address, self._builder.network), o.amount)
                       for o in old.payouts] + extra_payouts
            if extra_payouts:   # a new payout: limits, risk, tier, as the transaction manager's
                check_limits(uow, old.user, added, self._clock.now(), lock=False)
                leaving = sum(v.value for a, v in payouts if uow.addresses.get(a.value) is None)
        if extra_payouts:
            self._custody.check(old.wallet, leaving)
        old_rate_kvb = old.fee.value * 1000 // self._builder.vsize(old)
        if fee_rate.sat_per_kvb <= old_rate_kvb:
            raise InvalidAmount(f"the new fee rate {fee_rate} must exceed the current {FeeRate(old_rate_kvb)}")

        async def attempt() -> dict[str, Any]:
            if old.replacement_kind() == VOID:   # a void stays a void: the same coins back to our change chain
                new = await self._builder.of(old.wallet).propose_void(uuid.uuid4().hex, old, fee_rate)
            else:
                new = await self._builder.of(old.wallet).propose(uuid.uuid4().hex, payouts, fee_rate,
                                                                 must_spend=old.inputs)
            new.kind = old.replacement_kind()
            vsize = self._builder.vsize(new)
            minimum = max(await bip125_minimum(self._chain, [txid], vsize), old.fee.value + 1)
            if new.fee.value < minimum:
                raise fee_too_low(f"a replacement of {withdrawal_id}", minimum, vsize)
            new.replaces, new.user = old.withdrawal_id, old.user
            if not extra_payouts:
                await save_new(self._uow, new, holders, self._clock.now())
                return view(new)
            async with self._uow() as u:    # batch RBF: new money out, within the limits
                now = self._clock.now()
                check_limits(u, old.user, added, now, lock=True)
                # the risk review of the new destinations, under the limits' locks
                risk = assess_payout(u, now, old.user, added, added_to, own_deposit_addresses(u, added_to))
                held = new.review(risk, self._controls.review_score, now)
                record_new(u, new, holders, now)
                u.limits.take(Usage(new.withdrawal_id, old.user, added, now, destinations=added_to))
                u.record([held] if held else [])
                u.commit()
            await self._publisher.publish(u.committed_events())
            return view(new)

        return await retried(attempt, on=CoinsReserved, why="a coin was reserved by another withdrawal meanwhile")


class CpfpWithdrawal:
    """CPFP: lift a stuck broadcast withdrawal by spending its change with a high-fee child."""

    def __init__(self, builder: WithdrawalBuilder, uow: UnitOfWorkFactory, chain: ChainBackend,
                 clock: Clock) -> None:
        self._builder, self._uow, self._chain, self._clock = builder, uow, chain, clock

    async def __call__(self, withdrawal_id: str, fee_rate: FeeRate) -> dict[str, Any]:
        parent = await read_withdrawal(self._uow, withdrawal_id)
        txid = parent.require_bumpable()
        found = (await self._chain.wallet_transactions([txid])).get(txid)
        if found is None or found.confirmations != 0 or not found.in_mempool:
            raise InvalidAmount(f"withdrawal {withdrawal_id} is not waiting in the mempool: nothing to lift")
        if not any(o.change for o in parent.outputs):
            raise InvalidAmount(f"withdrawal {withdrawal_id} has no change output to spend")
        child = await self._builder.of(parent.wallet).propose_child(uuid.uuid4().hex, parent, fee_rate)
        child.child_of, child.kind = parent.withdrawal_id, CPFP
        await save_new(self._uow, child, (), self._clock.now())
        return {**view(child), "child_of": parent.withdrawal_id}
