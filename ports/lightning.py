"""Lightning node port (LND over REST in production)."""
from __future__ import annotations

import abc

from kaccy_bitcoin.domain.lightning import ChannelSummary, LightningInvoice
from kaccy_bitcoin.domain.money import MilliSatoshis


class LightningNode(abc.ABC):
    @abc.abstractmethod
    async def create_invoice(self, amount: MilliSatoshis, memo: str, expiry_seconds: int) -> LightningInvoice:
        """Create an invoice the payer can pay."""

    @abc.abstractmethod
    async def lookup_invoice(self, payment_hash: str) -> LightningInvoice:
        """The invoice as it stands now (state, amount paid)."""

    @abc.abstractmethod
    async def channels(self) -> list[ChannelSummary]:
        """Open channels and their balances."""
