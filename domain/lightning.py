"""Lightning invoices, payments and channels as the domain sees them: amounts in
millisatoshis (channel sizes in whole satoshis, as channels are funded on chain), hashes and
public keys as lowercase hex, times timezone-aware UTC."""
from __future__ import annotations

import datetime as dt
import enum
import re

import attrs

from kaccy_bitcoin.domain.errors import InvalidLightningValue
from kaccy_bitcoin.domain.invoice_state import InvoiceState
from kaccy_bitcoin.domain.money import MilliSatoshis

_HASH = re.compile(r"^[0-9a-f]{64}$")
_PUBKEY = re.compile(r"^0[23][0-9a-f]{64}$")


def _hex_hash(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, str) or not _HASH.match(value):
        raise InvalidLightningValue(f"{attribute.name} must be 32 bytes of lowercase hex, got {value!r}")


def _optional_hex_hash(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is not None:
        _hex_hash(instance, attribute, value)


def _index(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidLightningValue(f"{attribute.name} must be a non-negative integer, got {value!r}")


def _aware(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is not None and (not isinstance(value, dt.datetime) or value.tzinfo is None):
        raise InvalidLightningValue(f"{attribute.name} must be a timezone-aware datetime, got {value!r}")


def is_payment_hash(text: str) -> bool:
    return bool(_HASH.match(text))


class CancelReason(enum.Enum):
    """Why an invoice ended without payment: both reach the machine's EXPIRED state."""

    EXPIRED = "expired"      # its expiry time passed while it was open
    CANCELED = "canceled"    # someone canceled it before its expiry time


@attrs.frozen
class LightningInvoice:
    payment_hash: str = attrs.field(validator=_hex_hash)
    payment_request: str
    amount: MilliSatoshis
    memo: str
    created_at: dt.datetime = attrs.field(validator=_aware)
    expiry_seconds: int
    state: InvoiceState = InvoiceState.OPEN
    amount_paid: MilliSatoshis = MilliSatoshis(0)
    add_index: int = attrs.field(default=0, validator=_index)
    settle_index: int = attrs.field(default=0, validator=_index)
    settled_at: dt.datetime | None = attrs.field(default=None, validator=_aware)
    cancel_reason: CancelReason | None = None

    def __attrs_post_init__(self) -> None:
        if (self.state is InvoiceState.EXPIRED) != (self.cancel_reason is not None):
            raise InvalidLightningValue(
                f"invoice {self.payment_hash}: a cancel reason goes with the EXPIRED state only "
                f"(state {self.state.value}, reason {self.cancel_reason})")
        if (self.state is InvoiceState.SETTLED) != (self.settle_index > 0):
            raise InvalidLightningValue(
                f"invoice {self.payment_hash}: a settle index goes with the SETTLED state only")

    @property
    def expires_at(self) -> dt.datetime:
        return self.created_at + dt.timedelta(seconds=self.expiry_seconds)


@attrs.frozen
class InvoicePage:
    """One page of invoices ordered by add index; the offsets continue the listing."""

    invoices: tuple[LightningInvoice, ...]
    first_index_offset: int
    last_index_offset: int


class PaymentStatus(enum.Enum):
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@attrs.frozen
class LightningPayment:
    """An outgoing payment as it stands; `failure_reason` is LND's (e.g.
    FAILURE_REASON_INSUFFICIENT_BALANCE) and set only when it failed."""

    payment_hash: str = attrs.field(validator=_hex_hash)
    status: PaymentStatus
    amount: MilliSatoshis
    fee: MilliSatoshis
    failure_reason: str | None = None
    preimage: str | None = attrs.field(default=None, validator=_optional_hex_hash)

    def __attrs_post_init__(self) -> None:
        if (self.status is PaymentStatus.FAILED) != (self.failure_reason is not None):
            raise InvalidLightningValue(
                f"payment {self.payment_hash}: a failure reason goes with the FAILED status only")
        if self.status is PaymentStatus.SUCCEEDED and self.preimage is None:
            raise InvalidLightningValue(f"payment {self.payment_hash}: succeeded without a preimage")

    @property
    def is_final(self) -> bool:
        return self.status is not PaymentStatus.IN_FLIGHT


@attrs.frozen
class DecodedPaymentRequest:
    destination: str
    payment_hash: str = attrs.field(validator=_hex_hash)
    amount: MilliSatoshis
    created_at: dt.datetime = attrs.field(validator=_aware)
    expiry_seconds: int
    description: str
    cltv_expiry: int

    @property
    def expires_at(self) -> dt.datetime:
        return self.created_at + dt.timedelta(seconds=self.expiry_seconds)


@attrs.frozen
class ChannelPoint:
    funding_txid: str = attrs.field(validator=_hex_hash)
    output_index: int = attrs.field(validator=_index)

    def __str__(self) -> str:
        return f"{self.funding_txid}:{self.output_index}"


@attrs.frozen
class ChannelSummary:
    channel_id: str
    remote_pubkey: str
    capacity_sat: int
    local_balance_sat: int
    remote_balance_sat: int
    active: bool
    channel_point: ChannelPoint | None = None
    # active or inactive (open), pending_open (funding not yet confirmed), closing (a cooperative
    # close waiting for its transaction), force_closing (our funds timelocked until maturity)
    state: str = "open"
    closing_txid: str | None = None


@attrs.frozen
class ChannelBalance:
    """What the node could send (local) and receive (remote) over its open channels."""

    local: MilliSatoshis
    remote: MilliSatoshis
    pending_open_local: MilliSatoshis = MilliSatoshis(0)


@attrs.frozen
class NodeInfo:
    """Who the node is and whether it has caught up with the chain (LND's GetInfo)."""

    pubkey: str
    alias: str
    active_channels: int
    block_height: int
    synced_to_chain: bool
    networks: tuple[str, ...] = ()   # "bitcoin/regtest", ... as the node names its chains


def check_node_pubkey(pubkey: str) -> str:
    if not isinstance(pubkey, str) or not _PUBKEY.match(pubkey):
        raise InvalidLightningValue(f"a node public key is 33 bytes of compressed-key hex, got {pubkey!r}")
    return pubkey


@attrs.frozen
class PeerAddress:
    """A Lightning node to reach: `PUBKEY@HOST:PORT` (an IPv6 host in brackets)."""

    pubkey: str = attrs.field(validator=lambda _i, _a, v: check_node_pubkey(v))
    host: str

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        pubkey, at, host = str(text).strip().partition("@")
        _, colon, port = host.rpartition(":")
        if not at or not colon or not port.isdigit() or not 0 < int(port) < 65536 or len(host) > 255 \
                or any(c.isspace() for c in host) or host.startswith(":"):
            raise InvalidLightningValue(f"--node must be PUBKEY@HOST:PORT, got {text!r}")
        return cls(check_node_pubkey(pubkey), host)

    def __str__(self) -> str:
        return f"{self.pubkey}@{self.host}"


def parse_channel_point(text: str) -> ChannelPoint:
    """`FUNDING_TXID:OUTPUT_INDEX`, as LND and `ln channels` write a channel."""
    txid, colon, index = str(text).strip().partition(":")
    if not colon or not index.isdigit() or not _HASH.match(txid):
        raise InvalidLightningValue(f"a channel point is FUNDING_TXID:OUTPUT_INDEX, got {text!r}")
    return ChannelPoint(txid, int(index))
