"""Lightning invoices as the domain sees them (amounts in millisatoshis)."""
from __future__ import annotations

import datetime as dt

import attrs

from kaccy_bitcoin.domain.invoice_state import InvoiceState
from kaccy_bitcoin.domain.money import MilliSatoshis


@attrs.frozen
class LightningInvoice:
    payment_hash: str          # hex
    payment_request: str       # BOLT11
    amount: MilliSatoshis
    memo: str
    created_at: dt.datetime
    expiry_seconds: int
    state: InvoiceState = InvoiceState.OPEN
    amount_paid: MilliSatoshis = MilliSatoshis(0)


@attrs.frozen
class ChannelSummary:
    channel_id: str
    remote_pubkey: str
    capacity_sat: int
    local_balance_sat: int
    remote_balance_sat: int
    active: bool
