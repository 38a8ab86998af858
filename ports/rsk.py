"""RSK (Bitcoin sidechain, Ethereum-compatible JSON-RPC) port."""
from __future__ import annotations

import abc

from kaccy_bitcoin.domain.layer2 import L2Balance, L2Transaction


class RskNode(abc.ABC):
    @abc.abstractmethod
    async def transaction(self, txid: str) -> L2Transaction:
        """Receipt status of an RSK transaction."""

    @abc.abstractmethod
    async def balance(self, address: str) -> L2Balance:
        """rBTC balance of an account, in wei."""

    @abc.abstractmethod
    async def broadcast(self, raw_tx: bytes) -> str:
        """Submit a signed RSK transaction (eth_sendRawTransaction); returns its hash."""
