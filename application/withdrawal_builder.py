"""Proposes withdrawals: payout checks, fee rate, coin selection, change, the PSBT.

It never waits on the node inside a unit of work: it asks the node first (UTXOs, tip,
the funding transactions of P2PKH inputs), reads the reservations in a short read unit
of work, records a change address in its own short write unit of work (an unused change
index is harmless), then asks the node to watch it. What it returns is unsaved: the
caller reserves the inputs and saves the withdrawal in its own unit of work, and asks
again when a coin was reserved in between (CoinsReserved).

All of the wallet's coins and its change are of the deriver's address type; the PSBT
carries what a signer needs for that type (see domain/psbt.py).
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Sequence

import attrs

from kaccy_bitcoin.application.orders import WatchRange
from kaccy_bitcoin.domain.addresses import AddressEntry
from kaccy_bitcoin.domain.bitcoin import Address, AddressType, Network, OutPoint
from kaccy_bitcoin.domain.coin_selection import (
    DUST_LIMIT,
    INPUT_WEIGHT,
    OUTPUT_TYPE_WEIGHT,
    Coin,
    Selection,
    SelectionParams,
    finish_selection,
    overhead_weight,
    select_coins,
    vsize,
)
from kaccy_bitcoin.domain.errors import (DustOutput, FeeRateBelowMempoolMinimum, InsufficientFunds, InvalidAmount,
                                         NotFound)
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.psbt import (
    KeyOrigin,
    PsbtInputSpec,
    PsbtOutputSpec,
    build_psbt,
    estimated_vsize,
    psbt_txid,
)
from kaccy_bitcoin.domain.wallets import DEFAULT, UnknownWallet
from kaccy_bitcoin.domain.withdrawals import (
    Utxo,
    Withdrawal,
    WithdrawalInput,
    WithdrawalOutput,
    coins_to_spend_first,
)
from kaccy_bitcoin.ports.addresses import CHANGE, AddressDeriver
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory


@attrs.frozen
class WithdrawalSettings:
    network: Network
    fallback_fee_rate: FeeRate = FeeRate(2_000)
    fee_target_blocks: int = 6
    master_fingerprint: str = "00000000"
    min_confirmations: int = 1
    long_term_fee_rate: FeeRate = FeeRate(10_000)   # KACCY_LONG_TERM_FEE_RATE: coin selection's waste


class WithdrawalBuilder:
    """Shared by create, bump, void and CPFP: fee rate, coin selection, change, PSBT."""

    def __init__(self, chain: ChainBackend, deriver: AddressDeriver, watch: WatchRange, clock: Clock,
                 settings: WithdrawalSettings, uow: UnitOfWorkFactory, wallets: Any = None,
                 wallet: str = DEFAULT, book: Callable[[int], int] = lambda chain: chain) -> None:
        self._chain, self._deriver = chain, deriver
        self._watch, self._clock, self._settings = watch, clock, settings
        self._uow = uow
        self._wallets = wallets   # application.wallets.WalletDirectory, for `of`
        self.wallet = wallet
        self._book = book         # a chain of this wallet -> its chain in the address book

    def of(self, wallet: str | None) -> WithdrawalBuilder:
        """The builder of another wallet: its coins, its change chain, its keys in the PSBT."""
        if (wallet or DEFAULT) == self.wallet:
            return self
        if self._wallets is None:
            raise UnknownWallet(f"no wallet named {wallet!r}: this application knows only {self.wallet!r}")
        opened = self._wallets.get(wallet)
        return WithdrawalBuilder(self._chain, opened.deriver, opened.watch, self._clock, self._settings, self._uow,
                                 self._wallets, opened.name, opened.book_chain)

    @property
    def network(self) -> Network:
        return self._settings.network

    @property
    def _type(self) -> AddressType:
        return self._deriver.address_type

    @property
    def is_multisig(self) -> bool:
        """Whether a withdrawal of this wallet needs several signers."""
        return self._deriver.witness_script(0, 0) is not None

    @property
    def _input_weight(self) -> int:
        return self._deriver.spend_weight() or INPUT_WEIGHT[self._type]

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
                raise FeeRateBelowMempoolMinimum(f"fee rate {requested} is below the node's mempool minimum {floor}")
            return requested
        estimate = await self._chain.estimate_fee(self._settings.fee_target_blocks)
        return max(estimate.rate or self._settings.fallback_fee_rate, floor)

    def vsize(self, w: Withdrawal) -> int:
        """The withdrawal's virtual size once signed (as Core's `analyzepsbt` estimates it)."""
        return estimated_vsize(self.network, w.psbt)

    # -- proposals -------------------------------------------------------------------------

    async def propose(self, withdrawal_id: str, payouts: list[tuple[Address, Satoshis]], rate: FeeRate,
                      *, must_spend: Sequence[WithdrawalInput] = ()) -> Withdrawal:
        """Pay `payouts` at `rate` from unreserved coins; a replacement (RBF) passes the inputs
        of the withdrawal it replaces as `must_spend`: all of them are spent, plus more if needed.
        A new withdrawal spends first one coin of each cancelled or expired withdrawal whose PSBT
        could still be signed and sent (see `coins_to_spend_first`)."""
        utxos = await self._chain.unspent(self._settings.min_confirmations)
        tip = (await self._chain.chain_info()).blocks
        with self._uow.read() as uow:
            reserved = uow.reservations.reserved()
            abandoned = [] if must_spend else [w for w in uow.withdrawals.in_states(["rejected", "expired"])
                                               if w.wallet == self.wallet and w.abandoned_unsigned]
        paths = {i.outpoint: self._path_of(i) for i in must_spend}
        pool = []
        for u in utxos:
            if (u.outpoint in paths or u.outpoint in reserved or u.chain is None or u.index is None
                    or self._deriver.address(u.chain, u.index) != u.address):
                continue   # reserved, already required, or not a key of this account and type
            paths[u.outpoint] = (u.chain, u.index)
            pool.append(Coin(u.outpoint, u.amount, self._input_weight))
        required = [Coin(i.outpoint, i.amount, self._input_weight) for i in must_spend]
        # A cancelled or expired withdrawal's PSBT may still be signed elsewhere: spend one of its
        # coins first, so that a late broadcast of it conflicts with this one instead of paying twice.
        first = set(coins_to_spend_first(abandoned, (u.outpoint for u in utxos), (c.outpoint for c in pool)))
        if first:
            required = [c for c in pool if c.outpoint in first]
            pool = [c for c in pool if c.outpoint not in first]
        fixed = overhead_weight(self._type) + sum(OUTPUT_TYPE_WEIGHT[a.type] for a, _ in payouts)
        target = Satoshis(sum(v.value for _, v in payouts))
        params = attrs.evolve(SelectionParams.for_type(rate, self._type, self._deriver.spend_weight()),
                              long_term_fee_rate=self._settings.long_term_fee_rate)
        if required:
            selection = self._replacement(required, pool, target, fixed, params,
                                          "the replacement" if must_spend else "the withdrawal")
        else:
            selection = select_coins(pool, target, fixed, params, random.Random(withdrawal_id))
        coins = [(c.outpoint, c.amount, *paths[c.outpoint]) for c in selection.coins]
        funding = await self._funding(c.outpoint for c in selection.coins)
        outputs: list[tuple[str, Satoshis, int | None]] = [(a.value, v, None) for a, v in payouts]
        if selection.change.value:
            address, index = await self._new_change(withdrawal_id)
            outputs.append((address, selection.change, index))
        return self._withdrawal(withdrawal_id, coins, outputs, selection.fee, tip, funding)

    async def propose_child(self, withdrawal_id: str, parent: Withdrawal, rate: FeeRate) -> Withdrawal:
        """CPFP: spend the parent's change to a fresh change address, paying enough that
        parent and child together reach `rate`."""
        if parent.txid is None:
            raise InvalidAmount(f"withdrawal {parent.withdrawal_id} has no transaction id yet: nothing to lift")
        change = [(vout, o) for vout, o in enumerate(parent.outputs) if o.change]
        if not change:
            raise InvalidAmount(f"withdrawal {parent.withdrawal_id} has no change output to spend")
        vout, out = change[0]
        outpoint = OutPoint(parent.txid, vout)
        tip = (await self._chain.chain_info()).blocks
        funding = await self._funding([outpoint])
        with self._uow.read() as uow:
            entry = uow.addresses.get(out.address)
        if entry is None:
            raise NotFound(f"change address {out.address} is not in the address book")
        parent_vsize = self.vsize(parent)
        child_vsize = vsize(overhead_weight(self._type) + self._input_weight + OUTPUT_TYPE_WEIGHT[self._type])
        fee = max(rate.fee_for(parent_vsize + child_vsize).value - parent.fee.value, rate.fee_for(child_vsize).value)
        keep = self._above_dust(out.amount.value - fee, f"the change of {out.amount.value} sat cannot pay "
                                                        f"a {fee} sat child fee")
        address, index = await self._new_change(withdrawal_id)
        return self._withdrawal(withdrawal_id, [(outpoint, out.amount, entry.chain % 2, entry.index)],
                                [(address, keep, index)], Satoshis(fee), tip, funding)

    async def propose_void(self, withdrawal_id: str, original: Withdrawal, rate: FeeRate) -> Withdrawal:
        """Spend exactly `original.inputs` (no other coin) back to one fresh change address of
        ours, for a fee of `rate` times its size."""
        coins = [(i.outpoint, i.amount, *self._path_of(i)) for i in original.inputs]
        tip = (await self._chain.chain_info()).blocks
        funding = await self._funding(i.outpoint for i in original.inputs)
        weight = (overhead_weight(self._type) + self._input_weight * len(coins)
                  + OUTPUT_TYPE_WEIGHT[self._type])
        fee = rate.fee_for(vsize(weight)).value
        total = sum(i.amount.value for i in original.inputs)
        keep = self._above_dust(total - fee, f"voiding {original.withdrawal_id} at {rate} costs {fee} sat "
                                             f"of its {total} sat")
        address, index = await self._new_change(withdrawal_id)
        return self._withdrawal(withdrawal_id, coins, [(address, keep, index)], Satoshis(fee), tip, funding)

    @property
    def address_type(self) -> AddressType:
        return self._type

    async def owned(self, min_confirmations: int = 0) -> list[Utxo]:
        """The watch wallet's unspent outputs that are keys of this account and type."""
        return [u for u in await self._chain.unspent(min_confirmations)
                if u.chain is not None and u.index is not None and self._deriver.address(u.chain, u.index) == u.address]

    async def spendable(self) -> list[WithdrawalInput]:
        """The unreserved confirmed coins of this account and type, with their key paths: what
        a consolidation may merge."""
        utxos = await self.owned(self._settings.min_confirmations)
        with self._uow.read() as uow:
            reserved = uow.reservations.reserved()
        return [WithdrawalInput(u.outpoint, u.amount, u.chain, u.index) for u in utxos if u.outpoint not in reserved]

    def coin(self, i: WithdrawalInput) -> Coin:
        """`i` as coin selection sees it (its input weight is the wallet type's)."""
        return Coin(i.outpoint, i.amount, INPUT_WEIGHT[self._type])

    async def propose_sweep(self, withdrawal_id: str, inputs: Sequence[WithdrawalInput], fee: Satoshis) -> Withdrawal:
        """Spend exactly `inputs` to one fresh change address of ours, paying `fee` (a
        consolidation: the fee was planned for this very shape of transaction)."""
        coins = [(i.outpoint, i.amount, *self._path_of(i)) for i in inputs]
        tip = (await self._chain.chain_info()).blocks
        funding = await self._funding(i.outpoint for i in inputs)
        total = sum(i.amount.value for i in inputs)
        keep = self._above_dust(total - fee.value, f"merging {len(coins)} coins of {total} sat for {fee.value} sat")
        address, index = await self._new_change(withdrawal_id)
        return self._withdrawal(withdrawal_id, coins, [(address, keep, index)], fee, tip, funding)

    # -- parts -------------------------------------------------------------------------------

    @staticmethod
    def _replacement(required: list[Coin], pool: list[Coin], target: Satoshis, fixed: int,
                     params: SelectionParams, what: str = "the replacement") -> Selection:
        """Every required coin, plus the largest others until the payouts and the fee are paid."""
        chosen = list(required)
        extra = sorted(pool, key=lambda c: c.amount.value)
        selection = finish_selection(chosen, "replacement", target, fixed, params, allow_change=True)
        while selection is None and extra:
            chosen.append(extra.pop())
            selection = finish_selection(chosen, "replacement", target, fixed, params, allow_change=True)
        if selection is None:
            fee = params.fee_rate.fee_for(vsize(fixed + sum(c.input_weight for c in chosen))).value
            missing = target.value + fee - sum(c.amount.value for c in chosen)
            raise InsufficientFunds(missing, f"insufficient funds: {what} needs {target.value} sat plus "
                                             f"{fee} sat of fees: {missing} sat missing")
        return selection

    def _above_dust(self, keep: int, why: str) -> Satoshis:
        dust = DUST_LIMIT[self._type]
        if keep < dust:
            raise InsufficientFunds(dust - keep, f"{why}: what is left would be below the "
                                                 f"{self._type.value} dust limit of {dust} sat")
        return Satoshis(keep)

    @staticmethod
    def _path_of(i: WithdrawalInput) -> tuple[int, int]:
        if i.chain is None or i.index is None:
            raise NotFound(f"input {i.outpoint} has no recorded key path: cannot spend it again")
        return i.chain, i.index

    async def _funding(self, outpoints: Iterable[OutPoint]) -> dict[OutPoint, bytes]:
        """The whole funding transaction of each input, which spending P2PKH needs."""
        if self._type is not AddressType.P2PKH:
            return {}
        return {o: await self._chain.raw_transaction(o.txid) for o in outpoints}

    async def change_address(self, note: str) -> str:
        """A fresh address of this wallet's change chain, recorded and watched (what a swap's
        claim or refund pays to); `note` labels it in the address book."""
        address, _ = await self._new_change(note)
        return address

    async def _new_change(self, withdrawal_id: str) -> tuple[str, int]:
        """A fresh change address, committed to the address book and watched by the node."""
        async with self._uow() as uow:
            index = uow.addresses.allocate(self._book(CHANGE))
            address = self._deriver.address(CHANGE, index)
            uow.addresses.record(AddressEntry(address, self._book(CHANGE), index, f"change of {withdrawal_id}",
                                              None, "change"))
            uow.commit()
        await self._watch.cover(CHANGE, index + 1)
        return address, index

    def _origin(self, chain: int, index: int) -> KeyOrigin:
        return KeyOrigin(self._settings.master_fingerprint, self._deriver.path(chain, index),
                         self._deriver.public_key(chain, index))  # type: ignore[attr-defined]

    def _keys(self, chain: int, index: int) -> dict[str, Any]:
        """What a PSBT input or change output carries about our key(s) at chain/index."""
        script = self._deriver.witness_script(chain, index)
        if script is None:
            return {"origin": self._origin(chain, index)}
        return {"witness_script": script,
                "cosigners": tuple(KeyOrigin(fp, path, pub) for fp, path, pub in self._deriver.cosigners(chain, index))}

    def _withdrawal(self, withdrawal_id: str, coins: Sequence[tuple[OutPoint, Satoshis, int, int]],
                    outputs: Sequence[tuple[str, Satoshis, int | None]], fee: Satoshis, tip: int,
                    funding: dict[OutPoint, bytes]) -> Withdrawal:
        """The unsaved withdrawal and its PSBT; an output with a change index is our change."""
        inputs = [PsbtInputSpec(o, amount, Address(self._deriver.address(chain, index), self.network).script_pubkey(),
                                funding_tx=funding.get(o), **self._keys(chain, index))
                  for o, amount, chain, index in coins]
        specs = [PsbtOutputSpec(Address(address, self.network).script_pubkey(), amount,
                                **({} if change is None else self._keys(CHANGE, change)))
                 for address, amount, change in outputs]
        psbt = build_psbt(self.network, inputs, specs, locktime=tip)
        return Withdrawal(withdrawal_id, self._clock.now(),
                          [WithdrawalInput(o, amount, chain, index) for o, amount, chain, index in coins],
                          [WithdrawalOutput(address, amount, change=change is not None)
                           for address, amount, change in outputs],
                          fee, psbt, txid=psbt_txid(self.network, psbt), wallet=self.wallet)
