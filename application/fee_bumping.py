"""Fee bumping for broadcast withdrawals: RBF replacement (BIP125) and CPFP."""
from __future__ import annotations

import uuid
from typing import Any, Callable, Sequence

from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.application.withdrawals import load_withdrawal, view
from kaccy_bitcoin.domain.bitcoin import Address, OutPoint
from kaccy_bitcoin.domain.coin_selection import Coin
from kaccy_bitcoin.domain.errors import InvalidAmount, NotFound
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.domain.psbt import estimated_vsize
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWork


class BumpWithdrawal:
    """RBF (BIP125): a new withdrawal spending the same inputs (plus more if needed), paying
    the same payouts (and, for a batch RBF, new ones) at a higher fee rate; the original is
    marked replaced once created."""

    def __init__(self, builder: WithdrawalBuilder, uow: Callable[[], UnitOfWork], clock: Clock) -> None:
        self._builder, self._uow, self._clock = builder, uow, clock

    async def __call__(self, withdrawal_id: str, fee_rate: FeeRate,
                       add_payouts: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
        """`add_payouts` makes it a batch RBF: the replacement also pays these."""
        extra_payouts = self._builder.parse_payouts(add_payouts) if add_payouts else []
        async with self._uow() as uow:
            old = load_withdrawal(uow, withdrawal_id)
            old.require_broadcast("bumped")
            payouts = [(Address(o.address, self._builder.network), o.amount)
                       for o in old.outputs if not o.change] + extra_payouts
            old_rate_kvb = old.fee.value * 1000 // estimated_vsize(self._builder.network, old.psbt)
            if fee_rate.sat_per_kvb <= old_rate_kvb:
                raise InvalidAmount(f"the new fee rate {fee_rate} must exceed the current "
                                    f"{FeeRate(old_rate_kvb)}")
            extra = await self._builder.spendable(uow)
            self._builder.remember_paths({i.outpoint: (i.chain, i.index) for i in old.inputs
                                          if i.chain is not None and i.index is not None})
            original = [Coin(i.outpoint, i.amount) for i in old.inputs]
            new = await self._builder.build(uow, uuid.uuid4().hex, payouts, fee_rate, must_spend=original,
                                            extra=extra)
            if new.fee.value <= old.fee.value:
                raise InvalidAmount("the replacement must pay a higher absolute fee (BIP125 rule 3)")
            new.replaces = old.withdrawal_id
            old.replaced_by = new.withdrawal_id
            uow.reservations.release(old.withdrawal_id)   # the replacement takes over its coins
            uow.reservations.reserve(new.outpoints(), new.withdrawal_id, self._clock.now())
            uow.withdrawals.save(old)
            uow.withdrawals.save(new)
            uow.commit()
        return view(new)



class CpfpWithdrawal:
    """CPFP: lift a stuck broadcast withdrawal by spending its change with a high-fee child."""

    def __init__(self, builder: WithdrawalBuilder, uow: Callable[[], UnitOfWork], chain: ChainBackend,
                 clock: Clock) -> None:
        self._builder, self._uow, self._chain, self._clock = builder, uow, chain, clock

    async def __call__(self, withdrawal_id: str, fee_rate: FeeRate) -> dict[str, Any]:
        async with self._uow() as uow:
            parent = load_withdrawal(uow, withdrawal_id)
            txid = parent.require_broadcast("lifted by CPFP")
            found = (await self._chain.wallet_transactions([txid])).get(txid)
            if found is None or found.confirmations != 0 or not found.in_mempool:
                raise InvalidAmount(f"withdrawal {withdrawal_id} is not waiting in the mempool: nothing to lift")
            change = [(vout, o) for vout, o in enumerate(parent.outputs) if o.change]
            if not change:
                raise InvalidAmount(f"withdrawal {withdrawal_id} has no change output to spend")
            vout, out = change[0]
            entry = uow.addresses.get(out.address)
            if entry is None:
                raise NotFound(f"change address {out.address} is not in the address book")
            parent_vsize = estimated_vsize(self._builder.network, parent.psbt)
            coin = Coin(OutPoint(txid, vout), out.amount)
            child = await self._builder.build_child(uow, uuid.uuid4().hex, coin, (entry.chain, entry.index),
                                                    fee_rate, parent_vsize, parent.fee)
            child.child_of = parent.withdrawal_id
            uow.reservations.reserve(child.outpoints(), child.withdrawal_id, self._clock.now())
            uow.withdrawals.save(child)
            uow.commit()
        return {**view(child), "child_of": parent.withdrawal_id}
