"""The withdrawal builder over a scripted node and in-memory storage: what it proposes for each
address type, and that it never waits on the node with a unit of work open."""
from __future__ import annotations

import pytest
from bitcointx.core import CTransaction

from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.storage import MemoryStore, MemoryUnitOfWork
from kaccy_bitcoin.application.orders import WatchRange
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder, WithdrawalSettings
from kaccy_bitcoin.domain.bitcoin import Address, AddressType, OutPoint, Txid
from kaccy_bitcoin.domain.coin_selection import INPUT_WEIGHT, OUTPUT_TYPE_WEIGHT, overhead_weight, vsize
from kaccy_bitcoin.domain.errors import InsufficientFunds
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.psbt import check_psbt_pays, parse_psbt, psbt_txid
from kaccy_bitcoin.domain.withdrawals import Utxo, Withdrawal
from kaccy_bitcoin.ports.addresses import CHANGE
from tests.test_psbt import FINGERPRINT, KINDS, NET, PAYOUT, funding, wallet


class Storage:
    """Units of work over one memory store, counting those open."""

    def __init__(self) -> None:
        self.store, self.open = MemoryStore(), 0

    def __call__(self) -> MemoryUnitOfWork:
        return _CountedUow(self)

    def read(self) -> MemoryUnitOfWork:
        return _CountedUow(self, read_only=True)


class _CountedUow(MemoryUnitOfWork):
    def __init__(self, storage: Storage, read_only: bool = False) -> None:
        super().__init__(storage.store, read_only=read_only)
        self._storage = storage

    def __enter__(self) -> MemoryUnitOfWork:
        self._storage.open += 1
        return super().__enter__()

    async def __aenter__(self) -> MemoryUnitOfWork:
        self._storage.open += 1
        return await super().__aenter__()

    def __exit__(self, *exc: object) -> None:
        self._storage.open -= 1
        super().__exit__(*exc)


class Node(FakeChain):
    """The wallet's coins and their funding transactions; every question fails while a unit
    of work is open."""

    def __init__(self, storage: Storage) -> None:
        super().__init__()
        self.storage, self.utxos, self.raw = storage, [], {}

    def _asked(self) -> None:
        assert self.storage.open == 0, "the node was asked while a unit of work was open"

    def fund(self, kind: AddressType, amounts: list[int], chain: int = 0) -> list[Utxo]:
        deriver = wallet(kind)[0]
        raw = funding(deriver, amounts)
        txid = Txid(CTransaction.deserialize(raw).GetTxid()[::-1].hex())
        self.raw[txid] = raw
        coins = [Utxo(OutPoint(txid, i), Satoshis(a), deriver.address(0, i), 1, chain, i)
                 for i, a in enumerate(amounts)]
        self.utxos.extend(coins)
        return coins

    async def unspent(self, min_confirmations: int = 0) -> list[Utxo]:
        self._asked()
        return list(self.utxos)

    async def chain_info(self):  # noqa: ANN201
        self._asked()
        return await super().chain_info()

    async def raw_transaction(self, txid: Txid) -> bytes:
        self._asked()
        return self.raw[txid]

    async def ensure_watching(self, descriptors):  # noqa: ANN001, ANN201
        self._asked()
        return await super().ensure_watching(descriptors)


def builder(kind: AddressType) -> tuple[WithdrawalBuilder, Node, Storage]:
    storage = Storage()
    node = Node(storage)
    deriver = wallet(kind)[0]
    return (WithdrawalBuilder(node, deriver, WatchRange(deriver, node, 5), ManualClock(),
                              WithdrawalSettings(NET, master_fingerprint=FINGERPRINT), storage), node, storage)


def recorded(w: Withdrawal) -> tuple[list, list]:
    return ([(i.outpoint, i.amount) for i in w.inputs],
            [(Address(o.address, NET).script_pubkey(), o.amount) for o in w.outputs])


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_propose_spends_unreserved_coins_with_change_of_the_type(kind: AddressType) -> None:
    b, node, storage = builder(kind)
    coins = node.fund(kind, [100_000, 200_000, 300_000])
    with storage() as uow:
        uow.reservations.reserve([coins[2].outpoint], "another", ManualClock().now())
        uow.commit()
    w = await b.propose("w1", [(PAYOUT, Satoshis(250_000))], FeeRate.from_sat_per_vb(2))
    assert sorted(i.outpoint for i in w.inputs) == [coins[0].outpoint, coins[1].outpoint]
    assert [(i.chain, i.index) for i in sorted(w.inputs, key=lambda i: i.outpoint)] == [(0, 0), (0, 1)]
    payout, change = w.outputs
    assert (payout.address, payout.amount, payout.change) == (PAYOUT.value, Satoshis(250_000), False)
    assert change.change and Address(change.address, NET).type is kind
    check_psbt_pays(NET, w.psbt, *recorded(w), w.fee)
    assert w.fee.value >= 2 * b.vsize(w)
    assert w.txid == psbt_txid(NET, w.psbt) and (w.txid is None) == (kind is AddressType.P2PKH)
    if kind is AddressType.P2PKH:      # the whole funding transaction rides along
        assert all(inp.non_witness_utxo is not None for inp in parse_psbt(NET, w.psbt).inputs)
    with storage() as uow:            # the change address is committed and watched; nothing is reserved
        entry = uow.addresses.get(change.address)
        assert (entry.chain, entry.index, entry.purpose) == (CHANGE, 0, "change")
        assert uow.reservations.reserved() == {coins[2].outpoint: "another"}
    assert node.watch_ends[wallet(kind)[0].descriptor(CHANGE)] >= 5


async def test_coins_of_another_address_type_are_left_alone() -> None:
    b, node, _ = builder(AddressType.P2TR)
    node.fund(AddressType.P2WPKH, [500_000])     # same chain and index, another type's address
    with pytest.raises(InsufficientFunds):
        await b.propose("w1", [(PAYOUT, Satoshis(10_000))], FeeRate.from_sat_per_vb(2))


async def test_a_replacement_spends_every_original_input_and_more_if_needed() -> None:
    b, node, _ = builder(AddressType.P2WPKH)
    node.fund(AddressType.P2WPKH, [50_000, 200_000, 30_000, 20_000])
    original = await b.propose("w1", [(PAYOUT, Satoshis(15_000))], FeeRate.from_sat_per_vb(1))
    spent = {i.outpoint for i in original.inputs}
    node.utxos = [u for u in node.utxos if u.outpoint not in spent]     # in the mempool now
    largest_left = max(node.utxos, key=lambda u: u.amount.value)
    more = sum(i.amount.value for i in original.inputs) + 5_000
    bumped = await b.propose("w2", [(PAYOUT, Satoshis(more))], FeeRate.from_sat_per_vb(5), must_spend=original.inputs)
    assert [i.outpoint for i in bumped.inputs] == [*[i.outpoint for i in original.inputs], largest_left.outpoint]
    check_psbt_pays(NET, bumped.psbt, *recorded(bumped), bumped.fee)
    with pytest.raises(InsufficientFunds, match="missing"):
        await b.propose("w3", [(PAYOUT, Satoshis(400_000))], FeeRate.from_sat_per_vb(5), must_spend=original.inputs)


@pytest.mark.parametrize("kind", [AddressType.P2PKH, AddressType.P2TR], ids=lambda k: k.value)
async def test_a_void_spends_exactly_the_inputs_back_to_change(kind: AddressType) -> None:
    b, node, _ = builder(kind)
    node.fund(kind, [60_000, 70_000, 900_000])
    original = await b.propose("w1", [(PAYOUT, Satoshis(100_000))], FeeRate.from_sat_per_vb(1))
    void = await b.propose_void("v1", original, FeeRate.from_sat_per_vb(7))
    assert void.inputs == original.inputs
    (back,) = void.outputs
    assert back.change and Address(back.address, NET).type is kind and back.address not in {
        o.address for o in original.outputs}
    size = vsize(overhead_weight(kind) + len(void.inputs) * INPUT_WEIGHT[kind] + OUTPUT_TYPE_WEIGHT[kind])
    assert void.fee == Satoshis(7 * size) and back.amount.value == sum(i.amount.value for i in void.inputs) - 7 * size
    check_psbt_pays(NET, void.psbt, *recorded(void), void.fee)
    with pytest.raises(InsufficientFunds, match="dust limit"):
        await b.propose_void("v2", original, FeeRate(sum(i.amount.value for i in original.inputs) * 1000 // size))


async def test_a_child_lifts_its_parent_to_the_rate() -> None:
    b, node, _ = builder(AddressType.P2SH)
    node.fund(AddressType.P2SH, [500_000])
    parent = await b.propose("w1", [(PAYOUT, Satoshis(100_000))], FeeRate.from_sat_per_vb(1))
    child = await b.propose_child("c1", parent, FeeRate.from_sat_per_vb(20))
    change_vout = next(n for n, o in enumerate(parent.outputs) if o.change)
    ((spent, amount),), _ = recorded(child)
    assert (spent, amount) == (OutPoint(parent.txid, change_vout), parent.outputs[change_vout].amount)
    assert [(i.chain, i.index) for i in child.inputs] == [(CHANGE, 0)]
    (kept,) = child.outputs
    assert kept.change and Address(kept.address, NET).type is AddressType.P2SH
    assert parent.fee.value + child.fee.value >= 20 * (b.vsize(parent) + b.vsize(child))
    check_psbt_pays(NET, child.psbt, *recorded(child), child.fee)
