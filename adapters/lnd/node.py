"""The `LightningNode` port over LND's REST API."""
from __future__ import annotations

from typing import AsyncIterator

from kaccy_bitcoin.adapters.lnd import codec
from kaccy_bitcoin.adapters.lnd.client import LndRestClient
from kaccy_bitcoin.adapters.lnd.errors import LndError, LndInvoiceNotFound, LndUnreachable
from kaccy_bitcoin.domain.errors import InvalidAmount, InvalidLightningValue
from kaccy_bitcoin.domain.lightning import (
    ChannelBalance,
    ChannelPoint,
    ChannelSummary,
    DecodedPaymentRequest,
    InvoicePage,
    LightningInvoice,
    LightningPayment,
    NodeInfo,
    check_node_pubkey,
    is_payment_hash,
)
from kaccy_bitcoin.domain.money import MilliSatoshis
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.lightning import LightningNode

_NOT_FOUND_PHRASES = ("unable to locate invoice", "there are no existing invoices", "invoice not found")


def _check_hash(payment_hash: str) -> str:
    if not is_payment_hash(payment_hash):
        raise InvalidLightningValue(f"a payment hash is 32 bytes of lowercase hex, got {payment_hash!r}")
    return payment_hash


def _invoice_not_found(exc: LndError, payment_hash: str) -> LndError:
    message = (exc.lnd_message or "").lower()
    if exc.lnd_code == 5 or any(p in message for p in _NOT_FOUND_PHRASES):
        return LndInvoiceNotFound(f"LND has no invoice with payment hash {payment_hash}: {exc.lnd_message}",
                                  lnd_code=exc.lnd_code, lnd_message=exc.lnd_message, http_status=exc.http_status)
    return exc


class LndNode(LightningNode):
    def __init__(self, client: LndRestClient, clock: Clock) -> None:
        self._client = client
        self._clock = clock

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> LndNode:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def create_invoice(self, amount: MilliSatoshis, memo: str, expiry_seconds: int) -> LightningInvoice:
        if not isinstance(amount, MilliSatoshis):
            raise InvalidAmount(f"an invoice amount is MilliSatoshis, got {type(amount).__name__}")
        if isinstance(expiry_seconds, bool) or not isinstance(expiry_seconds, int) or expiry_seconds <= 0:
            raise InvalidLightningValue(f"expiry must be a positive number of seconds, got {expiry_seconds!r}")
        added = await self._client.request("POST", "/v1/invoices", body={
            "value_msat": str(amount.value), "memo": memo, "expiry": str(expiry_seconds), "private": False})
        return await self.lookup_invoice(codec.b64_to_hex(added["r_hash"]))

    async def lookup_invoice(self, payment_hash: str) -> LightningInvoice:
        _check_hash(payment_hash)
        try:
            record = await self._client.request("GET", "/v2/invoices/lookup",
                                                params={"payment_hash": codec.hex_to_b64url(payment_hash)})
        except LndError as exc:
            if exc.http_status not in (404, 501) or (exc.lnd_message or "").strip().lower() != "not found":
                raise _invoice_not_found(exc, payment_hash) from exc
            # An LND without the v2 route (before 0.15) answers the gateway's own "Not Found".
            record = await self.lookup_invoice_v1(payment_hash, raw=True)
        return codec.invoice(record, self._clock.now())

    async def lookup_invoice_v1(self, payment_hash: str, *, raw: bool = False):
        """The older `GET /v1/invoice/{r_hash_str}` (hex in the path)."""
        _check_hash(payment_hash)
        try:
            record = await self._client.request("GET", f"/v1/invoice/{payment_hash}")
        except LndError as exc:
            raise _invoice_not_found(exc, payment_hash) from exc
        return record if raw else codec.invoice(record, self._clock.now())

    async def list_invoices(self, index_offset: int = 0, max_invoices: int = 100, *,
                            pending_only: bool = False, reverse: bool = False) -> InvoicePage:
        params = {"index_offset": str(index_offset), "num_max_invoices": str(max_invoices),
                  "pending_only": "true" if pending_only else "false", "reversed": "true" if reverse else "false"}
        record = await self._client.request("GET", "/v1/invoices", params=params)
        now = self._clock.now()
        return InvoicePage(invoices=tuple(codec.invoice(i, now) for i in record.get("invoices", [])),
                           first_index_offset=codec.integer(record, "first_index_offset"),
                           last_index_offset=codec.integer(record, "last_index_offset"))

    async def cancel_invoice(self, payment_hash: str) -> None:
        _check_hash(payment_hash)
        try:
            await self._client.request("POST", "/v2/invoices/cancel",
                                       body={"payment_hash": codec.hex_to_b64(payment_hash)}, idempotent=True)
        except LndError as exc:
            raise _invoice_not_found(exc, payment_hash) from exc

    async def subscribe_invoices(self, add_index: int = 0, settle_index: int = 0) -> AsyncIterator[LightningInvoice]:
        params = {"add_index": str(add_index), "settle_index": str(settle_index)}
        async for record in self._client.stream("GET", "/v1/invoices/subscribe", params=params):
            yield codec.invoice(record, self._clock.now())
        raise LndUnreachable("GET /v1/invoices/subscribe: LND ended the invoice stream")

    async def pay_updates(self, payment_request: str, *, max_fee: MilliSatoshis,
                          timeout_seconds: int = 60) -> AsyncIterator[LightningPayment]:
        if not isinstance(max_fee, MilliSatoshis):
            raise InvalidAmount(f"the fee limit is MilliSatoshis, got {type(max_fee).__name__}")
        body = {"payment_request": payment_request, "timeout_seconds": timeout_seconds,
                "fee_limit_msat": str(max_fee.value), "no_inflight_updates": False}
        last = None
        async for record in self._client.stream("POST", "/v2/router/send", body=body):
            last = codec.payment(record)
            yield last
            if last.is_final:
                return
        raise LndUnreachable(f"POST /v2/router/send: LND ended the stream before payment "
                             f"{last.payment_hash if last else '?'} was final; track it by its hash")

    async def track_payment(self, payment_hash: str) -> LightningPayment | None:
        _check_hash(payment_hash)
        path = f"/v2/router/track/{codec.hex_to_b64url(payment_hash)}"
        try:
            async for record in self._client.stream("GET", path, params={"no_inflight_updates": "false"}):
                return codec.payment(record)    # the first update is the payment as it stands
        except LndError as exc:
            if exc.lnd_code == 5 or "isn't initiated" in (exc.lnd_message or ""):
                return None
            raise
        raise LndUnreachable(f"GET {path}: LND ended the stream without the payment's state")

    async def decode_payment_request(self, payment_request: str) -> DecodedPaymentRequest:
        return codec.pay_req(await self._client.request("GET", f"/v1/payreq/{payment_request}"))

    async def channels(self) -> list[ChannelSummary]:
        record = await self._client.request("GET", "/v1/channels")
        return [codec.channel(c) for c in record.get("channels", [])]

    async def node_info(self) -> NodeInfo:
        return codec.node_info(await self._client.request("GET", "/v1/getinfo"))

    async def channel_balance(self) -> ChannelBalance:
        return codec.balance(await self._client.request("GET", "/v1/balance/channels"))

    async def pending_channels(self) -> list[ChannelSummary]:
        return codec.pending_channels(await self._client.request("GET", "/v1/channels/pending"))

    async def connect_peer(self, pubkey: str, host: str) -> None:
        check_node_pubkey(pubkey)
        try:
            await self._client.request("POST", "/v1/peers", body={"addr": {"pubkey": pubkey, "host": host},
                                                                  "perm": False, "timeout": "30"})
        except LndError as exc:
            if "already connected" not in (exc.lnd_message or "").lower():
                raise

    async def open_channel(self, node_pubkey: str, local_funding_sat: int, push_sat: int = 0, *,
                           sat_per_vbyte: int | None = None) -> ChannelPoint:
        check_node_pubkey(node_pubkey)
        for name, value in (("local_funding_sat", local_funding_sat), ("push_sat", push_sat),
                            ("sat_per_vbyte", sat_per_vbyte or 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidAmount(f"{name} must be a non-negative integer, got {value!r}")
        body = {"node_pubkey": codec.hex_to_b64(node_pubkey), "local_funding_amount": str(local_funding_sat),
                "push_sat": str(push_sat)}
        if sat_per_vbyte:
            body["sat_per_vbyte"] = str(sat_per_vbyte)
        record = await self._client.request("POST", "/v1/channels", body=body)
        txid = (record["funding_txid_str"] if record.get("funding_txid_str")
                else codec.txid_from_lnd_bytes(record["funding_txid_bytes"]))
        return ChannelPoint(funding_txid=txid, output_index=int(record.get("output_index", 0)))

    async def close_channel(self, channel_point: ChannelPoint, *, force: bool = False) -> str:
        path = f"/v1/channels/{channel_point.funding_txid}/{channel_point.output_index}"
        params = {"force": "true" if force else "false"}
        async for update in self._client.stream("DELETE", path, params=params):
            if "close_pending" in update:
                return codec.txid_from_lnd_bytes(update["close_pending"]["txid"])
            if "chan_close" in update:
                return codec.txid_from_lnd_bytes(update["chan_close"]["closing_txid"])
        raise LndUnreachable(f"DELETE {path}: LND ended the stream without a closing transaction")
