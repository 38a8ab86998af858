"""What the chain backend reports, as domain records (no RPC JSON leaves the adapter)."""
from __future__ import annotations

import datetime as dt
import enum

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.money import FeeRate, Satoshis


@attrs.frozen
class BlockRef:
    hash: str
    height: int


@attrs.frozen
class BlockHeader:
    """The immutable part of a block header (safe to cache forever by hash)."""

    hash: str
    height: int
    previous_hash: str | None
    time: int


@attrs.frozen
class ChainInfo:
    chain: str
    blocks: int
    best_block_hash: str
    initial_block_download: bool


@attrs.frozen
class NodeInfo:
    version: int
    subversion: str
    connections: int


class Direction(enum.Enum):
    RECEIVE = "receive"
    SEND = "send"


@attrs.frozen
class WalletEntry:
    """One line of the wallet's history (listsinceblock / gettransaction details).

    `confirmations` is negative when a conflicting transaction is that deep in the chain.
    `first_seen` is when the node first saw the transaction (None when it does not say).
    """

    outpoint: OutPoint
    address: str | None
    amount: Satoshis
    direction: Direction
    confirmations: int
    block_hash: str | None = None
    block_height: int | None = None
    wallet_conflicts: tuple[Txid, ...] = ()
    replaced_by: Txid | None = None
    replaces: Txid | None = None
    abandoned: bool = False
    first_seen: dt.datetime | None = None


@attrs.frozen
class WalletHistory:
    """Changes since a block: current entries, entries whose blocks left the chain, new tip."""

    entries: tuple[WalletEntry, ...]
    removed: tuple[WalletEntry, ...]
    last_block: str


@attrs.frozen
class WalletTransaction:
    """A wallet transaction as it stands now (gettransaction)."""

    txid: Txid
    confirmations: int
    in_mempool: bool
    block_hash: str | None
    wallet_conflicts: tuple[Txid, ...] = ()
    mempool_conflicts: tuple[Txid, ...] = ()
    replaced_by: Txid | None = None
    replaces: Txid | None = None
    receives: tuple[WalletEntry, ...] = ()


@attrs.frozen
class FeeEstimate:
    """A fee estimate; `rate` is None when the node has too little data (regtest, fresh nodes)."""

    target_blocks: int
    rate: FeeRate | None
    errors: tuple[str, ...] = ()


@attrs.frozen
class MempoolInfo:
    size: int
    bytes: int
    min_fee: FeeRate
    full_rbf: bool = False        # the node relays replacements of transactions that do not signal BIP125


@attrs.frozen
class MempoolAcceptance:
    txid: Txid
    allowed: bool
    reject_reason: str = ""
    vsize: int | None = None
    fee: Satoshis | None = None


@attrs.frozen
class MempoolEntry:
    """A transaction waiting in the mempool, with the package it heads (getmempoolentry)."""

    txid: Txid
    vsize: int
    fee: Satoshis
    descendant_fees: Satoshis     # its own fee plus its unconfirmed descendants'
    descendant_vsize: int
    time: int                     # when it entered this node's mempool (seconds since the epoch)
    replaceable: bool = False     # signals BIP125, itself or through an unconfirmed ancestor
    ancestor_count: int = 1       # itself and its unconfirmed ancestors
    ancestor_vsize: int = 0       # their virtual size (0: not reported)
    ancestor_fees: Satoshis = Satoshis(0)

