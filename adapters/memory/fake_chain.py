"""FakeChain: a scriptable chain backend for tests.

It keeps blocks (best chain and orphaned branches), a mempool, and a watch list,
and answers the ChainBackend port the way Bitcoin Core's wallet RPCs do:
listsinceblock-style history with `removed` after a reorg, negative confirmations
for conflicted transactions, `replaced_by` links after a fee bump. Given a clock, it stamps
each new transaction with the time it first saw it (`first_seen`, as the node's `time` /
`timereceived`); without one it reports none, unless `pay` is given `seen_at`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from typing import Callable, Sequence

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.chain import (
    BlockHeader,
    ChainInfo,
    Direction,
    FeeEstimate,
    MempoolAcceptance,
    MempoolEntry,
    MempoolInfo,
    NodeInfo,
    WalletEntry,
    WalletHistory,
    WalletTransaction,
)
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.withdrawals import Utxo
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock

_counter = itertools.count(1)


def _hash(kind: str) -> str:
    return hashlib.sha256(f"{kind}:{next(_counter)}".encode()).hexdigest()


@attrs.define
class FakeTx:
    txid: str
    spends: tuple[str, ...]                 # identities of the coins it spends
    outputs: tuple[tuple[str, int], ...]    # (address, sat)
    replaces: str | None = None
    replaced_by: str | None = None
    first_seen: dt.datetime | None = None


@attrs.define
class FakeBlock:
    hash: str
    height: int
    prev: str | None
    txids: list[str]


class FakeChain(ChainBackend):
    """A chain a test scripts by hand: pay, mine, replace, double-spend, reorg."""

    def __init__(self, descriptor_addresses: Callable[[str, int], list[str]] | None = None, *,
                 clock: Clock | None = None) -> None:
        self.clock = clock
        genesis = FakeBlock(_hash("block"), 0, None, [])
        self.blocks: dict[str, FakeBlock] = {genesis.hash: genesis}
        self.best: list[str] = [genesis.hash]
        self.txs: dict[str, FakeTx] = {}
        self.mempool: dict[str, None] = {}
        self.watched: set[str] = set()
        self.watch_ends: dict[str, int] = {}  # descriptor -> last index watched; never shrinks
        self.fee_rate: FeeRate | None = None
        self.full_rbf = False                            # getmempoolinfo's fullrbf
        self.entries: dict[str, MempoolEntry] = {}       # mempool entries a test set (else 1 sat/vB, alone)
        self._descriptor_addresses = descriptor_addresses
        # Blocks the node has connected but not yet handed to its wallet (as the node does
        # between connecting a block and notifying its wallets): the wallet's answers lag by them.
        self.wallet_lag = 0

    # -- scripting -------------------------------------------------------------
    def watch(self, *addresses: str) -> None:
        self.watched.update(addresses)

    def pay(self, address: str, amount_sat: int, *, also: Sequence[tuple[str, int]] = (),
            seen_at: dt.datetime | None = None) -> str:
        """A new transaction paying `address` (and `also`), entering the mempool; first seen at
        `seen_at` (default: the clock's time, if the chain has a clock)."""
        tx = FakeTx(_hash("tx"), (_hash("coin"),), ((address, amount_sat), *also),
                    first_seen=seen_at or self._seen_now())
        self.txs[tx.txid] = tx
        self.mempool[tx.txid] = None
        return tx.txid

    def replace(self, txid: str, outputs: Sequence[tuple[str, int]] | None = None) -> str:
        """A fee bump (BIP125): same inputs, outputs kept unless given; evicts the original."""
        old = self.txs[txid]
        new = FakeTx(_hash("tx"), old.spends, tuple(outputs) if outputs is not None else old.outputs,
                     replaces=txid, first_seen=self._seen_now())
        old.replaced_by = new.txid
        self.txs[new.txid] = new
        self.mempool.pop(txid, None)
        self.mempool[new.txid] = None
        return new.txid

    def double_spend(self, txid: str, to_address: str = "elsewhere") -> str:
        """A conflicting transaction sending the same coins to someone else."""
        old = self.txs[txid]
        amount = sum(v for _, v in old.outputs)
        new = FakeTx(_hash("tx"), old.spends, ((to_address, amount),), first_seen=self._seen_now())
        self.txs[new.txid] = new
        self.mempool.pop(txid, None)
        self.mempool[new.txid] = None
        return new.txid

    def mine(self, count: int = 1, *, include: Sequence[str] | None = None) -> list[str]:
        """Mine blocks; the first takes the mempool (or only `include`)."""
        hashes = []
        for i in range(count):
            if i == 0:
                txids = list(self.mempool) if include is None else list(include)
            else:
                txids = []
            for t in txids:
                self.mempool.pop(t, None)
            tip = self.blocks[self.best[-1]]
            block = FakeBlock(_hash("block"), tip.height + 1, tip.hash, txids)
            self.blocks[block.hash] = block
            self.best.append(block.hash)
            hashes.append(block.hash)
        self._evict_conflicts()
        return hashes

    def reorg(self, depth: int, *, new_blocks: int | None = None, drop: Sequence[str] = (),
              include: Sequence[str] | None = None) -> list[str]:
        """Disconnect the last `depth` blocks, return their transactions to the mempool
        (except `drop`), and mine `new_blocks` (default depth + 1) in their place."""
        removed = self.best[-depth:]
        del self.best[-depth:]
        for h in removed:
            for t in self.blocks[h].txids:
                if t not in drop:
                    self.mempool[t] = None
        self._evict_conflicts()
        return self.mine(depth + 1 if new_blocks is None else new_blocks, include=include)

    def drop_from_mempool(self, txid: str) -> None:
        self.mempool.pop(txid, None)

    # -- internals -------------------------------------------------------------
    def _seen_now(self) -> dt.datetime | None:
        return self.clock.now() if self.clock is not None else None

    @property
    def height(self) -> int:
        return len(self.best) - 1

    def _wallet_best(self) -> list[str]:
        """The chain as the wallet has taken it in."""
        return self.best[:len(self.best) - self.wallet_lag]

    def _height_of(self, txid: str, best: list[str] | None = None) -> int | None:
        for height, h in enumerate(self.best if best is None else best):
            if txid in self.blocks[h].txids:
                return height
        return None

    def _spent_by_chain(self) -> dict[str, str]:
        spent = {}
        for h in self.best:
            for t in self.blocks[h].txids:
                for coin in self.txs[t].spends:
                    spent[coin] = t
        return spent

    def _evict_conflicts(self) -> None:
        spent = self._spent_by_chain()
        for t in list(self.mempool):
            if any(spent.get(c, t) != t for c in self.txs[t].spends):
                del self.mempool[t]

    def _conflicts(self, txid: str) -> list[str]:
        coins = set(self.txs[txid].spends)
        return [t for t, tx in self.txs.items() if t != txid and coins & set(tx.spends)]

    def _confirmations(self, txid: str, best: list[str] | None = None) -> int:
        best = self.best if best is None else best
        tip = len(best) - 1
        height = self._height_of(txid, best)
        if height is not None:
            return tip - height + 1
        worst = 0
        for other in self._conflicts(txid):
            h = self._height_of(other, best)
            if h is not None:
                worst = min(worst, -(tip - h + 1))
        return worst

    def _entries(self, txid: str) -> list[WalletEntry]:
        """The wallet's entries for a transaction (as far as the wallet has taken blocks in)."""
        best = self._wallet_best()
        tx = self.txs[txid]
        conf = self._confirmations(txid, best)
        height = self._height_of(txid, best)
        block = best[height] if height is not None else None
        return [
            WalletEntry(OutPoint(Txid(txid), vout), address, Satoshis(amount), Direction.RECEIVE, conf,
                        block, height, tuple(Txid(c) for c in self._conflicts(txid)),
                        Txid(tx.replaced_by) if tx.replaced_by else None,
                        Txid(tx.replaces) if tx.replaces else None, first_seen=tx.first_seen)
            for vout, (address, amount) in enumerate(tx.outputs) if address in self.watched
        ]

    def _wallet_txids(self) -> list[str]:
        return [t for t, tx in self.txs.items() if any(a in self.watched for a, _ in tx.outputs)]

    # -- ChainBackend ------------------------------------------------------------
    async def node_info(self) -> NodeInfo:
        return NodeInfo(290000, "/FakeChain/", 0)

    async def chain_info(self) -> ChainInfo:
        return ChainInfo("regtest", self.height, self.best[-1], False)

    async def block_header(self, block_hash: str) -> BlockHeader:
        b = self.blocks[block_hash]
        return BlockHeader(b.hash, b.height, b.prev, 1_700_000_000 + b.height * 600)

    async def block_hash(self, height: int) -> str:
        return self.best[height]

    async def raw_transaction(self, txid: Txid) -> bytes:
        return bytes.fromhex(txid.value)

    async def mempool_txids(self) -> set[Txid]:
        return {Txid(t) for t in self.mempool}

    async def in_mempool(self, txids: Sequence[Txid]) -> set[Txid]:
        return {t for t in txids if t.value in self.mempool}

    async def mempool_entry(self, txid: Txid) -> MempoolEntry | None:
        if txid.value not in self.mempool:
            return None
        if txid.value in self.entries:
            return self.entries[txid.value]
        return MempoolEntry(txid, 141, Satoshis(141), Satoshis(141), 141, 1_700_000_000)

    async def incremental_relay_fee(self) -> FeeRate:
        return FeeRate(1000)

    async def mempool_info(self) -> MempoolInfo:
        return MempoolInfo(len(self.mempool), 250 * len(self.mempool), FeeRate(1000), self.full_rbf)

    async def estimate_fee(self, target_blocks: int) -> FeeEstimate:
        if self.fee_rate is None:
            return FeeEstimate(target_blocks, None, ("Insufficient data or no feerate found",))
        return FeeEstimate(target_blocks, self.fee_rate)

    async def ensure_watching(self, descriptors: Sequence[tuple[str, int]]) -> list[int]:
        for descriptor, end in descriptors:
            if end > self.watch_ends.get(descriptor, -1):
                self.watch_ends[descriptor] = end
                if self._descriptor_addresses is not None:
                    self.watched.update(self._descriptor_addresses(descriptor, end))
        return [self.watch_ends[descriptor] for descriptor, _ in descriptors]

    async def wallet_synced(self) -> bool:
        return self.wallet_lag == 0

    async def wallet_history(self, since_block: str | None, target_confirmations: int) -> WalletHistory:
        best = self._wallet_best()
        tip = len(best) - 1
        relevant = []
        removed: list[WalletEntry] = []
        if since_block is None:
            since_height = -1
        else:
            block = self.blocks[since_block]
            b = block
            orphaned = []
            while b.hash not in best:
                orphaned.append(b)
                b = self.blocks[b.prev]  # type: ignore[index]
            since_height = b.height if orphaned else block.height
            for ob in orphaned:
                for t in ob.txids:
                    removed.extend(self._entries(t))
        for t in self._wallet_txids():
            height = self._height_of(t, best)
            conf = self._confirmations(t, best)
            # A transaction the node mined in a block the wallet has not taken in yet is, to the
            # wallet, still unconfirmed (though the mempool no longer holds it).
            lagging = height is None and self._height_of(t) is not None
            if height is not None and height > since_height:
                relevant.append(t)
            elif height is None and (t in self.mempool or lagging or (conf < 0 and -conf < tip - since_height)):
                relevant.append(t)
        entries = [e for t in relevant for e in self._entries(t)]
        last_height = max(tip + 1 - target_confirmations, 0)
        return WalletHistory(tuple(entries), tuple(removed), best[last_height])

    async def wallet_transactions(self, txids: Sequence[Txid]) -> dict[Txid, WalletTransaction | None]:
        out: dict[Txid, WalletTransaction | None] = {}
        for txid in txids:
            tx = self.txs.get(txid.value)
            if tx is None:
                out[txid] = None
                continue
            best = self._wallet_best()
            height = self._height_of(txid.value, best)
            conflicts = self._conflicts(txid.value)
            out[txid] = WalletTransaction(
                txid, self._confirmations(txid.value, best), txid.value in self.mempool,
                best[height] if height is not None else None,
                wallet_conflicts=tuple(Txid(c) for c in conflicts),
                mempool_conflicts=tuple(Txid(c) for c in conflicts if c in self.mempool),
                replaced_by=Txid(tx.replaced_by) if tx.replaced_by else None,
                replaces=Txid(tx.replaces) if tx.replaces else None,
                receives=tuple(self._entries(txid.value)),
            )
        return out

    async def unspent(self, min_confirmations: int = 0) -> list[Utxo]:
        utxos = []
        for t in self._wallet_txids():
            conf = self._confirmations(t)
            if conf < min_confirmations or (conf == 0 and t not in self.mempool):
                continue
            for e in self._entries(t):
                utxos.append(Utxo(e.outpoint, e.amount, e.address or "", conf))
        return utxos

    async def test_accept(self, raw_tx: bytes) -> MempoolAcceptance:
        return MempoolAcceptance(Txid(raw_tx.hex().rjust(64, "0")[:64]), True)

    async def broadcast(self, raw_tx: bytes) -> Txid:
        txid = raw_tx.hex().rjust(64, "0")[:64]
        self.txs.setdefault(txid, FakeTx(txid, (_hash("coin"),), (), first_seen=self._seen_now()))
        self.mempool[txid] = None
        return Txid(txid)
