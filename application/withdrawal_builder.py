"""Builds withdrawal PSBTs: payout checks, fee rate, coin selection, change, key origins."""
from __future__ import annotations

import random
from typing import Mapping, Sequence

import attrs

from kaccy_bitcoin.application.orders import WatchRange
from kaccy_bitcoin.domain.addresses import AddressEntry
from kaccy_bitcoin.domain.bitcoin import Address, AddressType, Network, OutPoint
from kaccy_bitcoin.domain.coin_selection import (
    OUTPUT_WEIGHT,
    TX_OVERHEAD_WEIGHT,
    Coin,
    SelectionParams,
    finish_selection,
    select_coins,
)
from kaccy_bitcoin.domain.errors import DustOutput, InsufficientFunds, InvalidAmount
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.psbt import KeyOrigin, PsbtInputSpec, PsbtOutputSpec, build_psbt
from kaccy_bitcoin.domain.withdrawals import Withdrawal, WithdrawalInput, WithdrawalOutput
from kaccy_bitcoin.ports.addresses import CHANGE, AddressDeriver
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWork

# Outputs below these values are dust at Bitcoin Core's 3 sat/vB dust relay fee.
DUST_LIMIT = {AddressType.P2PKH: 546, AddressType.P2SH: 540, AddressType.P2WPKH: 294,
              AddressType.P2WSH: 330, AddressType.P2TR: 330}
OUTPUT_TYPE_WEIGHT = {AddressType.P2PKH: OUTPUT_WEIGHT["p2pkh"], AddressType.P2SH: OUTPUT_WEIGHT["p2sh"],
                      AddressType.P2WPKH: OUTPUT_WEIGHT["p2wpkh"], AddressType.P2WSH: OUTPUT_WEIGHT["p2wsh"],
                      AddressType.P2TR: OUTPUT_WEIGHT["p2tr"]}


@attrs.frozen
class WithdrawalSettings:
    network: Network
    fallback_fee_rate: FeeRate = FeeRate(2_000)
    fee_target_blocks: int = 6
    master_fingerprint: str = "00000000"
    min_confirmations: int = 1


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
