"""Lightning node port (LND over REST in production)."""
from __future__ import annotations

import abc
from typing import AsyncIterator

from kaccy_bitcoin.domain.lightning import (
    ChannelBalance,
    ChannelPoint,
    ChannelSummary,
    DecodedPaymentRequest,
    InvoicePage,
    LightningInvoice,
    LightningPayment,
    NodeInfo,
)
from kaccy_bitcoin.domain.errors import KaccyError
from kaccy_bitcoin.domain.money import MilliSatoshis


class LightningNodeError(KaccyError):
    """The Lightning node could not be reached or refused a request (adapters' errors derive
    from it, so a use case can tell "the node did not answer" from a rule it broke)."""


class LightningNodeUnreachable(LightningNodeError):
    """The node could not be reached, or the connection was lost after the request was sent:
    what was asked may have taken effect (a payment may be in flight)."""


class LightningNode(abc.ABC):
    @abc.abstractmethod
    async def create_invoice(self, amount: MilliSatoshis, memo: str, expiry_seconds: int) -> LightningInvoice:
        """Create an invoice the payer can pay; it carries its add index."""

    @abc.abstractmethod
    async def lookup_invoice(self, payment_hash: str) -> LightningInvoice:
        """The invoice as it stands now (state, amount paid); raises a `NotFound` when the node
        has no invoice with this hash."""

    @abc.abstractmethod
    async def list_invoices(self, index_offset: int = 0, max_invoices: int = 100, *,
                            pending_only: bool = False, reverse: bool = False) -> InvoicePage:
        """Invoices with an add index after `index_offset` (before it when `reverse`; 0 then means
        from the newest), oldest first, at most `max_invoices`."""

    @abc.abstractmethod
    async def cancel_invoice(self, payment_hash: str) -> None:
        """Cancel an open invoice so it can no longer be paid; a settled one is refused."""

    @abc.abstractmethod
    def subscribe_invoices(self, add_index: int = 0, settle_index: int = 0) -> AsyncIterator[LightningInvoice]:
        """Invoices as they are added and settled: first the ones added after `add_index` and
        settled after `settle_index` (0 = none replayed), then live ones. Indexes may have gaps.
        The iterator ends with an error when the connection is lost; resume with the highest
        indexes processed and look up the invoices still open, since cancellations and
        expiries are not streamed."""

    @abc.abstractmethod
    def pay_updates(self, payment_request: str, *, max_fee: MilliSatoshis,
                    timeout_seconds: int = 60) -> AsyncIterator[LightningPayment]:
        """Pay a BOLT11 request, yielding each update up to the final SUCCEEDED or FAILED one."""

    async def pay(self, payment_request: str, *, max_fee: MilliSatoshis,
                  timeout_seconds: int = 60) -> LightningPayment:
        """Pay a BOLT11 request and return its final result."""
        last = None
        async for update in self.pay_updates(payment_request, max_fee=max_fee, timeout_seconds=timeout_seconds):
            last = update
            if update.is_final:
                return update
        raise ConnectionError(f"the node stopped reporting on payment {last.payment_hash if last else '?'} "
                              "before it was final")

    @abc.abstractmethod
    async def track_payment(self, payment_hash: str) -> LightningPayment | None:
        """The node's outgoing payment of this hash as it stands now; None when the node never
        started one (so paying it now cannot pay twice)."""

    @abc.abstractmethod
    async def decode_payment_request(self, payment_request: str) -> DecodedPaymentRequest:
        """What a BOLT11 request asks for, as the node reads it."""

    @abc.abstractmethod
    async def channels(self) -> list[ChannelSummary]:
        """Open channels and their balances."""

    @abc.abstractmethod
    async def node_info(self) -> NodeInfo:
        """Who the node is, its view of the chain (height, whether synced) and its channel count."""

    @abc.abstractmethod
    async def channel_balance(self) -> ChannelBalance:
        """Sendable and receivable totals over the open channels."""

    @abc.abstractmethod
    async def pending_channels(self) -> list[ChannelSummary]:
        """Channels opening (funding unconfirmed) or closing (`state` says which)."""

    @abc.abstractmethod
    async def connect_peer(self, pubkey: str, host: str) -> None:
        """Connect to a peer at HOST:PORT (being connected already is no error)."""

    @abc.abstractmethod
    async def open_channel(self, node_pubkey: str, local_funding_sat: int, push_sat: int = 0, *,
                           sat_per_vbyte: int | None = None) -> ChannelPoint:
        """Open a channel to a peer, funded with `local_funding_sat` from the node's wallet
        (its funding transaction paying `sat_per_vbyte`, else the node's estimate)."""

    @abc.abstractmethod
    async def close_channel(self, channel_point: ChannelPoint, *, force: bool = False) -> str:
        """Close a channel; returns the closing transaction's txid."""
