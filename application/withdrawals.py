"""Use cases for money going out: create, sign, broadcast, cancel, show a withdrawal.

Coins are reserved in the database in the same unit of work that records the
withdrawal, so two withdrawals (in one process or two) never spend the same coin;
the PSBT is persisted at every step, so a restart resumes where it stopped.
"""
from __future__ import annotations

import inspect
import uuid
from typing import Any, Callable, Mapping, Sequence

from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.domain.bitcoin import Network, Txid
from kaccy_bitcoin.domain.errors import CoinsReserved, DomainError, NotFound
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.domain.psbt import finalize_psbt
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.withdrawals import Withdrawal
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.signer import PsbtSigner, SignerError
from kaccy_bitcoin.ports.storage import UnitOfWork


class RejectedByNode(DomainError):
    code = "rejected_by_node"


def view(w: Withdrawal, confirmations: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "withdrawal_id": w.withdrawal_id, "psbt": w.psbt, "fee_sat": w.fee.value,
        "inputs": [{"txid": i.outpoint.txid.value, "vout": i.outpoint.vout, "amount_sat": i.amount.value}
                   for i in w.inputs],
        "outputs": [{"address": o.address, "amount_sat": o.amount.value, "change": o.change} for o in w.outputs],
        "state": w.state.name.lower(),
    }
    if w.replaces:
        out["replaces"] = w.replaces
    if w.replaced_by:
        out["replaced_by"] = w.replaced_by
    if w.reject_reason:
        out["reject_reason"] = w.reject_reason
    if w.child_of:
        out["child_of"] = w.child_of
    if w.txid is not None and w.state is PsbtState.BROADCAST:
        out["txid"] = w.txid.value
        out["confirmations"] = confirmations or 0
    return out


class CreateWithdrawal:
    def __init__(self, builder: WithdrawalBuilder, uow: Callable[[], UnitOfWork], clock: Clock) -> None:
        self._builder, self._uow, self._clock = builder, uow, clock

    async def __call__(self, payouts: Sequence[tuple[str, int]], fee_rate: FeeRate | None = None) -> dict[str, Any]:
        parsed = self._builder.parse_payouts(payouts)
        rate = await self._builder.fee_rate(fee_rate)
        for attempt in range(3):
            try:
                async with self._uow() as uow:
                    coins = await self._builder.spendable(uow)
                    w = await self._builder.build(uow, uuid.uuid4().hex, parsed, rate, extra=coins)
                    uow.reservations.reserve(w.outpoints(), w.withdrawal_id, self._clock.now())
                    uow.withdrawals.save(w)
                    uow.commit()
                    return view(w)
            except CoinsReserved:
                if attempt == 2:
                    raise
        raise CoinsReserved("coins kept being reserved by concurrent withdrawals")


class SignWithdrawal:
    def __init__(self, uow: Callable[[], UnitOfWork], signers: Mapping[str, Callable[[], Any]], clock: Clock) -> None:
        self._uow, self._signers, self._clock = uow, signers, clock

    async def __call__(self, withdrawal_id: str, signer_name: str) -> dict[str, Any]:
        if signer_name not in self._signers:
            raise SignerError(f"unknown signer {signer_name!r}; expected one of {', '.join(self._signers)}")
        async with self._uow() as uow:
            w = load_withdrawal(uow, withdrawal_id)
            signer: PsbtSigner = await _resolve(self._signers[signer_name]())
            result = await signer.sign(w.psbt)
            w.record_signatures(result.psbt, result.complete, self._clock.now(), signer.name)
            uow.withdrawals.save(w)
            uow.commit()
        return {"withdrawal_id": w.withdrawal_id, "psbt": w.psbt, "state": w.state.name.lower()}


class BroadcastWithdrawal:
    def __init__(self, uow: Callable[[], UnitOfWork], chain: ChainBackend, clock: Clock, network: Network) -> None:
        self._uow, self._chain, self._clock, self._network = uow, chain, clock, network

    async def __call__(self, withdrawal_id: str) -> dict[str, Any]:
        async with self._uow() as uow:
            w = load_withdrawal(uow, withdrawal_id)
            if w.state is PsbtState.SIGNED:
                psbt, raw, txid = finalize_psbt(self._network, w.psbt)
                w.finalize(psbt, txid, self._clock.now())
                uow.withdrawals.save(w)
                uow.commit()   # FINALIZED is durable before anything reaches the network
        async with self._uow() as uow:
            w = load_withdrawal(uow, withdrawal_id)
            if w.state is not PsbtState.FINALIZED:
                w.mark_broadcast(self._clock.now())   # raises IllegalTransition naming the state
            _, raw, txid = finalize_psbt(self._network, w.psbt)
            accept = await self._chain.test_accept(raw)
            if not accept.allowed and not await self._already_known(txid):
                w.reject(f"rejected by the node: {accept.reject_reason}", self._clock.now())
                uow.reservations.release(w.withdrawal_id)
                uow.withdrawals.save(w)
                uow.commit()
                raise RejectedByNode(f"withdrawal {withdrawal_id} was rejected by the node "
                                     f"({accept.reject_reason}); its coins are released")
            if accept.allowed:
                await self._chain.broadcast(raw)
            w.mark_broadcast(self._clock.now())
            uow.withdrawals.save(w)
            uow.commit()
        return {"withdrawal_id": w.withdrawal_id, "txid": txid.value, "state": "broadcast"}

    async def _already_known(self, txid: Txid) -> bool:
        """A resumed broadcast whose transaction already reached the mempool or a block."""
        found = (await self._chain.wallet_transactions([txid])).get(txid)
        return found is not None and (found.confirmations > 0 or found.in_mempool)


class CancelWithdrawal:
    def __init__(self, uow: Callable[[], UnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, withdrawal_id: str) -> dict[str, Any]:
        async with self._uow() as uow:
            w = load_withdrawal(uow, withdrawal_id)
            w.cancel(self._clock.now())
            uow.reservations.release(withdrawal_id)
            uow.withdrawals.save(w)
            uow.commit()
        return {"withdrawal_id": withdrawal_id, "state": "rejected"}


class ShowWithdrawal:
    def __init__(self, uow: Callable[[], UnitOfWork], chain: ChainBackend) -> None:
        self._uow, self._chain = uow, chain

    async def __call__(self, withdrawal_id: str) -> dict[str, Any]:
        async with self._uow() as uow:
            w = load_withdrawal(uow, withdrawal_id)
        confirmations = None
        if w.txid is not None and w.state is PsbtState.BROADCAST:
            found = (await self._chain.wallet_transactions([w.txid])).get(w.txid)
            confirmations = max(found.confirmations, 0) if found else 0
        return view(w, confirmations)


def load_withdrawal(uow: UnitOfWork, withdrawal_id: str) -> Withdrawal:
    w = uow.withdrawals.get(withdrawal_id)
    if w is None:
        raise NotFound(f"no withdrawal with id {withdrawal_id!r}")
    return w


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value

