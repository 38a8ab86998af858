"""Stacks (Bitcoin L2) port: its HTTP API for transactions and balances."""
from __future__ import annotations

import abc

from kaccy_bitcoin.domain.layer2 import L2Balance, L2Transaction


class StacksNode(abc.ABC):
    @abc.abstractmethod
    async def transaction(self, txid: str) -> L2Transaction:
        """Status of a Stacks transaction."""

    @abc.abstractmethod
    async def balance(self, address: str) -> L2Balance:
        """STX balance of a principal, in micro-STX."""

    @abc.abstractmethod
    async def broadcast(self, raw_tx: bytes) -> str:
        """Submit a signed Stacks transaction; returns its txid."""
