"""Use cases for money going out: create, sign, broadcast, cancel, show a withdrawal.

Coins are reserved in the database in the same unit of work that records the
withdrawal, so two withdrawals (in one process or two) never spend the same coin;
the PSBT is persisted at every step, so a restart resumes where it stopped.
"""
from __future__ import annotations

import inspect
import random
import uuid
from typing import Any, Callable, Mapping, Sequence

import attrs

from kaccy_bitcoin.application.orders import WatchRange
from kaccy_bitcoin.domain.addresses import AddressEntry
from kaccy_bitcoin.domain.bitcoin import Address, AddressType, Network, OutPoint, Txid
from kaccy_bitcoin.domain.coin_selection import (
    OUTPUT_WEIGHT,
    TX_OVERHEAD_WEIGHT,
    Coin,
    SelectionParams,
    finish_selection,
    select_coins,
)
from kaccy_bitcoin.domain.errors import (
    CoinsReserved,
    DomainError,
    DustOutput,
    InsufficientFunds,
    InvalidAmount,
    NotFound,
)
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.psbt import (
    KeyOrigin,
    PsbtInputSpec,
    PsbtOutputSpec,
    build_psbt,
    estimated_vsize,
    finalize_psbt,
)
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.withdrawals import Withdrawal, WithdrawalInput, WithdrawalOutput
from kaccy_bitcoin.ports.addresses import CHANGE, AddressDeriver
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.signer import PsbtSigner, SignerError
from kaccy_bitcoin.ports.storage import UnitOfWork

# Outputs below these values are dust at Bitcoin Core's 3 sat/vB dust relay fee.
DUST_LIMIT = {AddressType.P2PKH: 546, AddressType.P2SH: 540, AddressType.P2WPKH: 294,
              AddressType.P2WSH: 330, AddressType.P2TR: 330}
OUTPUT_TYPE_WEIGHT = {AddressType.P2PKH: OUTPUT_WEIGHT["p2pkh"], AddressType.P2SH: OUTPUT_WEIGHT["p2sh"],
                      AddressType.P2WPKH: OUTPUT_WEIGHT["p2wpkh"], AddressType.P2WSH: OUTPUT_WEIGHT["p2wsh"],
                      AddressType.P2TR: OUTPUT_WEIGHT["p2tr"]}


class RejectedByNode(DomainError):
    code = "rejected_by_node"


@attrs.frozen
class WithdrawalSettings:
    network: Network
    fallback_fee_rate: FeeRate = FeeRate(2_000)
    fee_target_blocks: int = 6
    master_fingerprint: str = "00000000"
    min_confirmations: int = 1


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


class WithdrawalBuilder:
    """Shared by create and bump: fee rate, coin selection, change, PSBT."""

    def __init__(self, chain: ChainBackend, deriver: AddressDeriver, watch: WatchRange, clock: Clock,
                 settings: WithdrawalSettings) -> None:
        self._chain, self._deriver = chain, deriver
        self._watch, self._clock, self._settings = watch, clock, settings
        self._paths: dict[OutPoint, tuple[int, int]] = {}

    @property
    def network(self) -> Network:
        return self._settings.network

    def remember_paths(self, paths: Mapping[OutPoint, tuple[int, int]]) -> None:
        self._paths.update(paths)

    def parse_payouts(self, payouts: Sequence[tuple[str, int]]) -> list[tuple[Address, Satoshis]]:
        if not payouts:
            raise InvalidAmount("a withdrawal needs at least one --to ADDRESS --amount-sat N")
        parsed = []
        for address, amount in payouts:
            a = Address(address, self._settings.network)
            if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                raise InvalidAmount(f"amount for {address} must be a positive number of sat, got {amount!r}")
            dust = DUST_LIMIT[a.type]
            if amount < dust:
                raise DustOutput(f"{amount} sat to {address} is below the {a.type.value} dust limit of {dust} sat")
            parsed.append((a, Satoshis(amount)))
        return parsed

    async def fee_rate(self, requested: FeeRate | None) -> FeeRate:
        floor = (await self._chain.mempool_info()).min_fee
        if requested is not None:
            if requested < floor:
                raise InvalidAmount(f"fee rate {requested} is below the node's mempool minimum {floor}")
            return requested
        estimate = await self._chain.estimate_fee(self._settings.fee_target_blocks)
        return max(estimate.rate or self._settings.fallback_fee_rate, floor)

    async def build(self, uow: UnitOfWork, withdrawal_id: str, payouts: list[tuple[Address, Satoshis]],
                    rate: FeeRate, must_spend: Sequence[Coin] = (), extra: Sequence[Coin] = ()) -> Withdrawal:
        now = self._clock.now()
        fixed = TX_OVERHEAD_WEIGHT + sum(OUTPUT_TYPE_WEIGHT[a.type] for a, _ in payouts)
        target = Satoshis(sum(v.value for _, v in payouts))
        params = SelectionParams(rate)
        rng = random.Random(withdrawal_id)
        if must_spend:   # a replacement spends every input of the original, plus more if needed
            selection = finish_selection(list(must_spend), "replacement", target, fixed, params, allow_change=True)
            pool = list(extra)
            while selection is None and pool:
                pool.sort(key=lambda c: c.amount.value)
                must_spend = [*must_spend, pool.pop()]
                selection = finish_selection(list(must_spend), "replacement", target, fixed, params, allow_change=True)
            if selection is None:
                selection = select_coins(list(must_spend) + list(extra), target, fixed, params, rng)
        else:
            selection = select_coins(list(extra), target, fixed, params, rng)
        inputs = [self._input_spec(c) for c in selection.coins]
        outputs = [PsbtOutputSpec(a.script_pubkey(), v) for a, v in payouts]
        w_outputs = [WithdrawalOutput(a.value, v) for a, v in payouts]
        if selection.change.value:
            index = uow.addresses.allocate(CHANGE)
            change_address = self._deriver.address(CHANGE, index)
            uow.addresses.record(AddressEntry(change_address, CHANGE, index, f"change of {withdrawal_id}",
                                              None, "change"))
            await self._watch.cover(uow, CHANGE, uow.addresses.issued(CHANGE))
            outputs.append(PsbtOutputSpec(Address(change_address, self._settings.network).script_pubkey(),
                                          selection.change, self._origin(CHANGE, index)))
            w_outputs.append(WithdrawalOutput(change_address, selection.change, change=True))
        tip = (await self._chain.chain_info()).blocks
        psbt = build_psbt(self._settings.network, inputs, outputs, locktime=tip)
        return Withdrawal(withdrawal_id, now, [WithdrawalInput(c.outpoint, c.amount, *self._paths[c.outpoint])
                                               for c in selection.coins],
                          w_outputs, selection.fee, psbt)

    async def build_child(self, uow: UnitOfWork, withdrawal_id: str, coin: Coin, path: tuple[int, int],
                          rate: FeeRate, parent_vsize: int, parent_fee: Satoshis) -> Withdrawal:
        """A CPFP child: spends one of our outputs of an unconfirmed parent back to a fresh change
        address, paying enough that parent and child together reach `rate`."""
        self._paths[coin.outpoint] = path
        child_vsize = -(-(TX_OVERHEAD_WEIGHT + coin.input_weight + OUTPUT_WEIGHT["p2wpkh"]) // 4)
        fee = max(rate.fee_for(parent_vsize + child_vsize).value - parent_fee.value,
                  rate.fee_for(child_vsize).value)
        keep = coin.amount.value - fee
        if keep < DUST_LIMIT[AddressType.P2WPKH]:
            raise InsufficientFunds(DUST_LIMIT[AddressType.P2WPKH] - keep,
                                    f"the change of {coin.amount.value} sat cannot pay a {fee} sat child fee")
        index = uow.addresses.allocate(CHANGE)
        address = self._deriver.address(CHANGE, index)
        uow.addresses.record(AddressEntry(address, CHANGE, index, f"change of {withdrawal_id}", None, "change"))
        await self._watch.cover(uow, CHANGE, uow.addresses.issued(CHANGE))
        tip = (await self._chain.chain_info()).blocks
        psbt = build_psbt(self.network, [self._input_spec(coin)],
                          [PsbtOutputSpec(Address(address, self.network).script_pubkey(), Satoshis(keep),
                                          self._origin(CHANGE, index))], locktime=tip)
        return Withdrawal(withdrawal_id, self._clock.now(), [WithdrawalInput(coin.outpoint, coin.amount, *path)],
                          [WithdrawalOutput(address, Satoshis(keep), change=True)], Satoshis(fee), psbt)

    def _origin(self, chain: int, index: int) -> KeyOrigin:
        return KeyOrigin(self._settings.master_fingerprint, self._deriver.path(chain, index),
                         self._deriver.public_key(chain, index))  # type: ignore[attr-defined]

    def _input_spec(self, coin: Coin) -> PsbtInputSpec:
        chain, index = self._paths[coin.outpoint]
        address = self._deriver.address(chain, index)
        return PsbtInputSpec(coin.outpoint, coin.amount, Address(address, self._settings.network).script_pubkey(),
                             self._origin(chain, index))

    async def spendable(self, uow: UnitOfWork, exclude_reserved: bool = True) -> list[Coin]:
        utxos = await self._chain.unspent(self._settings.min_confirmations)
        reserved = uow.reservations.reserved() if exclude_reserved else {}
        self._paths.update({u.outpoint: (u.chain, u.index) for u in utxos
                            if u.chain is not None and u.index is not None})
        return [Coin(u.outpoint, u.amount) for u in utxos
                if u.chain is not None and u.index is not None and u.outpoint not in reserved]


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
            w = _load(uow, withdrawal_id)
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
            w = _load(uow, withdrawal_id)
            if w.state is PsbtState.SIGNED:
                psbt, raw, txid = finalize_psbt(self._network, w.psbt)
                w.finalize(psbt, txid, self._clock.now())
                uow.withdrawals.save(w)
                uow.commit()   # FINALIZED is durable before anything reaches the network
        async with self._uow() as uow:
            w = _load(uow, withdrawal_id)
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
            w = _load(uow, withdrawal_id)
            if w.state is PsbtState.BROADCAST:
                raise InvalidAmount(f"withdrawal {withdrawal_id} is already broadcast: "
                                    "use `withdraw bump` to replace it")
            w.reject("cancelled", self._clock.now())
            uow.reservations.release(withdrawal_id)
            uow.withdrawals.save(w)
            uow.commit()
        return {"withdrawal_id": withdrawal_id, "state": "rejected"}


class ShowWithdrawal:
    def __init__(self, uow: Callable[[], UnitOfWork], chain: ChainBackend) -> None:
        self._uow, self._chain = uow, chain

    async def __call__(self, withdrawal_id: str) -> dict[str, Any]:
        async with self._uow() as uow:
            w = _load(uow, withdrawal_id)
        confirmations = None
        if w.txid is not None and w.state is PsbtState.BROADCAST:
            found = (await self._chain.wallet_transactions([w.txid])).get(w.txid)
            confirmations = max(found.confirmations, 0) if found else 0
        return view(w, confirmations)


class BumpWithdrawal:
    """RBF (BIP125): a new withdrawal spending the same inputs (plus more if needed), paying
    the same payouts at a higher fee rate; the original is marked replaced once created."""

    def __init__(self, builder: WithdrawalBuilder, uow: Callable[[], UnitOfWork], clock: Clock) -> None:
        self._builder, self._uow, self._clock = builder, uow, clock

    async def __call__(self, withdrawal_id: str, fee_rate: FeeRate) -> dict[str, Any]:
        async with self._uow() as uow:
            old = _load(uow, withdrawal_id)
            if old.state is not PsbtState.BROADCAST:
                raise InvalidAmount(f"withdrawal {withdrawal_id} is {old.state.name.lower()}, not broadcast: "
                                    "only a broadcast withdrawal can be bumped")
            if old.replaced_by:
                raise InvalidAmount(f"withdrawal {withdrawal_id} was already replaced by {old.replaced_by}")
            payouts = [(Address(o.address, self._builder.network), o.amount)
                       for o in old.outputs if not o.change]
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
            parent = _load(uow, withdrawal_id)
            if parent.state is not PsbtState.BROADCAST or parent.txid is None:
                raise InvalidAmount(f"withdrawal {withdrawal_id} is {parent.state.name.lower()}: "
                                    "only a broadcast withdrawal can be lifted")
            found = (await self._chain.wallet_transactions([parent.txid])).get(parent.txid)
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
            coin = Coin(OutPoint(parent.txid, vout), out.amount)
            child = await self._builder.build_child(uow, uuid.uuid4().hex, coin, (entry.chain, entry.index),
                                                    fee_rate, parent_vsize, parent.fee)
            child.child_of = parent.withdrawal_id
            uow.reservations.reserve(child.outpoints(), child.withdrawal_id, self._clock.now())
            uow.withdrawals.save(child)
            uow.commit()
        return {**view(child), "child_of": parent.withdrawal_id}


def _load(uow: UnitOfWork, withdrawal_id: str) -> Withdrawal:
    w = uow.withdrawals.get(withdrawal_id)
    if w is None:
        raise NotFound(f"no withdrawal with id {withdrawal_id!r}")
    return w


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value

