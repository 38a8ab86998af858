"""The chain backend port: a Bitcoin node and the watch-only wallet it keeps for us."""
from __future__ import annotations

import abc
from typing import Sequence

from kaccy_bitcoin.domain.bitcoin import Txid
from kaccy_bitcoin.domain.chain import (
    BlockHeader,
    ChainInfo,
    FeeEstimate,
    MempoolAcceptance,
    MempoolEntry,
    MempoolInfo,
    NodeInfo,
    WalletHistory,
    WalletTransaction,
)
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.domain.nodes import NodeReport
from kaccy_bitcoin.domain.withdrawals import Utxo


class ChainBackend(abc.ABC):
    """Blocks, transactions, mempool, fees, the watch wallet's history and UTXOs, broadcast."""

    @abc.abstractmethod
    async def node_info(self) -> NodeInfo:
        """Version and connection count of the node."""

    @abc.abstractmethod
    async def chain_info(self) -> ChainInfo:
        """Which chain the node follows and its tip."""

    @abc.abstractmethod
    async def block_header(self, block_hash: str) -> BlockHeader:
        """The immutable fields of a block header."""

    @abc.abstractmethod
    async def block_hash(self, height: int) -> str:
        """Hash of the best-chain block at `height`."""

    @abc.abstractmethod
    async def raw_transaction(self, txid: Txid) -> bytes:
        """Serialized transaction (from the mempool, the wallet, or the txindex)."""

    @abc.abstractmethod
    async def mempool_txids(self) -> set[Txid]:
        """Every transaction id in the node's mempool."""

    @abc.abstractmethod
    async def in_mempool(self, txids: Sequence[Txid]) -> set[Txid]:
        """Those of `txids` the node's mempool holds now (a cost in `len(txids)`, not in the mempool's size)."""

    @abc.abstractmethod
    async def mempool_entry(self, txid: Txid) -> MempoolEntry | None:
        """The mempool's entry for a transaction (fees of its descendants included), None if absent."""

    async def mempool_entries(self, txids: Sequence[Txid]) -> dict[Txid, MempoolEntry | None]:
        """`mempool_entry` of several transactions (an adapter may ask the node in one batch)."""
        return {t: await self.mempool_entry(t) for t in txids}

    @abc.abstractmethod
    async def incremental_relay_fee(self) -> FeeRate:
        """The fee rate a replacement must add on top of what it replaces (BIP125 rule 4)."""

    @abc.abstractmethod
    async def mempool_info(self) -> MempoolInfo:
        """Mempool size and the minimum fee rate it currently accepts."""

    @abc.abstractmethod
    async def estimate_fee(self, target_blocks: int) -> FeeEstimate:
        """Fee estimate for confirmation within `target_blocks`; rate None without data."""

    @abc.abstractmethod
    async def ensure_watching(self, descriptors: Sequence[tuple[str, int]]) -> list[int]:
        """Make the watch wallet track at least indexes 0..end of each (ranged descriptor, end)
        pair, never narrowing what it tracks, even with other processes doing the same at once;
        returns the last index it now tracks for each descriptor (the node may track more)."""

    @abc.abstractmethod
    async def wallet_history(self, since_block: str | None, target_confirmations: int) -> WalletHistory:
        """Wallet entries changed since `since_block` (listsinceblock semantics)."""

    @abc.abstractmethod
    async def wallet_transactions(self, txids: Sequence[Txid]) -> dict[Txid, WalletTransaction | None]:
        """Current view of several wallet transactions (None: the wallet does not know it)."""

    @abc.abstractmethod
    async def wallet_synced(self) -> bool:
        """Whether the watch wallet has taken in every block the node had connected when asked.

        The node drops a mined transaction from its mempool as it connects the block, and hands
        the block to its wallets afterwards: until then the wallet still lists the transaction
        unconfirmed, though the mempool no longer has it. Asked after a mempool look-up, True
        means the wallet's answers read afterwards cover every block that look-up saw."""

    @abc.abstractmethod
    async def unspent(self, min_confirmations: int = 0) -> list[Utxo]:
        """The watch wallet's unspent outputs."""

    @abc.abstractmethod
    async def test_accept(self, raw_tx: bytes) -> MempoolAcceptance:
        """Would the mempool accept this transaction (testmempoolaccept)?"""

    @abc.abstractmethod
    async def broadcast(self, raw_tx: bytes) -> Txid:
        """Submit a transaction to the network."""


class NodeSet(abc.ABC):
    """The Bitcoin node(s) behind the chain backend: their states, and whether they agree."""

    @abc.abstractmethod
    async def cross_check(self) -> NodeReport:
        """Ask every node its tip now (a node marked down only when its back-off allows) and
        classify them (domain/nodes.py); the calls that follow use the new primary."""

    @abc.abstractmethod
    async def finality_held(self) -> bool:
        """True while the nodes disagree on the chain: no payment or withdrawal may become final."""
