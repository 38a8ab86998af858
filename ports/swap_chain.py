"""What the swaps ask of the node about outputs that are not our wallet's: the HTLCs."""
from __future__ import annotations

import abc

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.money import Satoshis


class TransactionRefused(DomainError):
    """The node refused a transaction we sent (an outside failure: exit status 1)."""

    code = "rejected_by_node"
    exit_status = 1


@attrs.frozen
class ChainOutput:
    """An unspent output as the node sees it (the mempool included)."""

    amount: Satoshis
    script_pubkey: bytes
    confirmations: int   # 0: in the mempool


class SwapChain(abc.ABC):
    @abc.abstractmethod
    async def tip_height(self) -> int:
        """The height of the node's best block."""

    @abc.abstractmethod
    async def unspent_output(self, outpoint: OutPoint) -> ChainOutput | None:
        """The output if it exists and is unspent, the mempool's spends counted (gettxout)."""

    @abc.abstractmethod
    async def output_count(self, txid: Txid) -> int | None:
        """How many outputs the transaction has; None when the node does not know it."""

    @abc.abstractmethod
    async def confirmations(self, txid: Txid) -> int | None:
        """The transaction's confirmations (0: in the mempool); None when the node does not know it."""

    @abc.abstractmethod
    async def spender(self, outpoint: OutPoint, from_height: int) -> bytes | None:
        """The raw transaction spending `outpoint`, looked for in the mempool and in the blocks
        from `from_height` to the tip; None when none is found."""

    @abc.abstractmethod
    async def refusal(self, raw_tx: bytes) -> str | None:
        """Why the node's mempool would refuse the transaction now (testmempoolaccept); None
        when it would take it."""

    @abc.abstractmethod
    async def broadcast(self, raw_tx: bytes) -> Txid:
        """Submit a transaction (sendrawtransaction); TransactionRefused with the node's reason."""
