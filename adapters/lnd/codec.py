"""LND's REST JSON to domain records and back: int64 fields arrive as strings, bytes as
base64 (standard alphabet in bodies, URL-safe in query strings), hashes leave as hex."""
from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from kaccy_bitcoin.adapters.lnd.errors import LndError
from kaccy_bitcoin.domain.invoice_state import InvoiceState
from kaccy_bitcoin.domain.lightning import (
    CancelReason,
    ChannelBalance,
    ChannelPoint,
    ChannelSummary,
    DecodedPaymentRequest,
    LightningInvoice,
    LightningPayment,
    NodeInfo,
    PaymentStatus,
)
from kaccy_bitcoin.domain.money import MilliSatoshis

_INVOICE_STATES = {"OPEN": InvoiceState.OPEN, "ACCEPTED": InvoiceState.PENDING,
                   "SETTLED": InvoiceState.SETTLED, "CANCELED": InvoiceState.EXPIRED}
_PAYMENT_STATUSES = {"INITIATED": PaymentStatus.IN_FLIGHT, "IN_FLIGHT": PaymentStatus.IN_FLIGHT,
                     "SUCCEEDED": PaymentStatus.SUCCEEDED, "FAILED": PaymentStatus.FAILED}


def b64_to_hex(value: str) -> str:
    return base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)).hex()


def hex_to_b64(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode()


def hex_to_b64url(value: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(value)).decode()


def txid_from_lnd_bytes(value: str) -> str:
    """LND's `*_txid_bytes` fields hold the txid in internal (reversed) byte order."""
    return base64.b64decode(value)[::-1].hex()


def integer(record: dict, name: str) -> int:
    try:
        return int(record.get(name) or 0)
    except (TypeError, ValueError) as exc:
        raise LndError(f"LND sent a non-integer {name}: {record.get(name)!r}") from exc


def _time(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def invoice(record: dict[str, Any], now: dt.datetime) -> LightningInvoice:
    """An LND Invoice. CANCELED becomes EXPIRED, with the reason told by the clock: canceled at
    or after its expiry time reads as expiry (LND records no cancel time)."""
    lnd_state = record.get("state", "OPEN")
    if lnd_state not in _INVOICE_STATES:
        raise LndError(f"LND sent an unknown invoice state {lnd_state!r}")
    created_at = _time(integer(record, "creation_date"))
    expiry = integer(record, "expiry")
    cancel_reason = None
    if lnd_state == "CANCELED":
        expired = now >= created_at + dt.timedelta(seconds=expiry)
        cancel_reason = CancelReason.EXPIRED if expired else CancelReason.CANCELED
    settled = lnd_state == "SETTLED"
    return LightningInvoice(
        payment_hash=b64_to_hex(record["r_hash"]),
        payment_request=record.get("payment_request", ""),
        amount=MilliSatoshis(integer(record, "value_msat")),
        memo=record.get("memo", ""),
        created_at=created_at,
        expiry_seconds=expiry,
        state=_INVOICE_STATES[lnd_state],
        amount_paid=MilliSatoshis(integer(record, "amt_paid_msat")),
        add_index=integer(record, "add_index"),
        settle_index=integer(record, "settle_index") if settled else 0,
        settled_at=_time(integer(record, "settle_date")) if settled else None,
        cancel_reason=cancel_reason,
    )


def payment(record: dict[str, Any]) -> LightningPayment:
    status = _PAYMENT_STATUSES.get(record.get("status", ""))
    if status is None:
        raise LndError(f"LND sent an unknown payment status {record.get('status')!r}")
    reason = record.get("failure_reason") or "FAILURE_REASON_NONE"
    preimage = record.get("payment_preimage") or ""
    return LightningPayment(
        payment_hash=record["payment_hash"],
        status=status,
        amount=MilliSatoshis(integer(record, "value_msat")),
        fee=MilliSatoshis(integer(record, "fee_msat")),
        failure_reason=reason if status is PaymentStatus.FAILED else None,
        preimage=preimage if status is PaymentStatus.SUCCEEDED and preimage.strip("0") else None,
    )


def pay_req(record: dict[str, Any]) -> DecodedPaymentRequest:
    return DecodedPaymentRequest(
        destination=record["destination"],
        payment_hash=record["payment_hash"],
        amount=MilliSatoshis(integer(record, "num_msat")),
        created_at=_time(integer(record, "timestamp")),
        expiry_seconds=integer(record, "expiry"),
        description=record.get("description", ""),
        cltv_expiry=integer(record, "cltv_expiry"),
    )


def channel_point(text: str) -> ChannelPoint:
    txid, _, index = text.partition(":")
    return ChannelPoint(funding_txid=txid, output_index=int(index))


def channel(record: dict[str, Any]) -> ChannelSummary:
    return ChannelSummary(
        channel_id=str(record.get("chan_id", "")),
        remote_pubkey=record.get("remote_pubkey", ""),
        capacity_sat=integer(record, "capacity"),
        local_balance_sat=integer(record, "local_balance"),
        remote_balance_sat=integer(record, "remote_balance"),
        active=bool(record.get("active")),
        channel_point=channel_point(record["channel_point"]) if record.get("channel_point") else None,
        state="active" if record.get("active") else "inactive",
    )


def pending_channels(record: dict[str, Any]) -> list[ChannelSummary]:
    """LND's PendingChannelsResponse: opening, waiting to close, and force-closing channels."""
    out = []
    for key, state in (("pending_open_channels", "pending_open"), ("waiting_close_channels", "closing"),
                       ("pending_force_closing_channels", "force_closing")):
        for entry in record.get(key) or []:
            c = entry.get("channel") or {}
            out.append(ChannelSummary(
                channel_id="", remote_pubkey=c.get("remote_node_pub", ""), capacity_sat=integer(c, "capacity"),
                local_balance_sat=integer(c, "local_balance"), remote_balance_sat=integer(c, "remote_balance"),
                active=False, channel_point=channel_point(c["channel_point"]) if c.get("channel_point") else None,
                state=state, closing_txid=entry.get("closing_txid") or None))
    return out


def balance(record: dict[str, Any]) -> ChannelBalance:
    def msat(name: str) -> MilliSatoshis:
        return MilliSatoshis(integer(record.get(name) or {}, "msat"))
    return ChannelBalance(local=msat("local_balance"), remote=msat("remote_balance"),
                          pending_open_local=msat("pending_open_local_balance"))


def node_info(record: dict[str, Any]) -> NodeInfo:
    """GetInfo: `block_height` and the channel counts are uint32 (JSON numbers), `chains` a list
    of `{"chain", "network"}`."""
    chains = tuple(f"{c.get('chain', '')}/{c.get('network', '')}" for c in record.get("chains") or []
                   if isinstance(c, dict))
    return NodeInfo(pubkey=str(record.get("identity_pubkey", "")), alias=str(record.get("alias", "")),
                    active_channels=integer(record, "num_active_channels"),
                    block_height=integer(record, "block_height"),
                    synced_to_chain=record.get("synced_to_chain") is True, networks=chains)
