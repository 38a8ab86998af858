"""The fake node's state and rules: invoices (its own and ones "elsewhere"), outgoing
payments, channels; persisted to one JSON file, written atomically after every change.

Amounts are msat internally; the REST layer (server.py) renders LND's JSON from these records.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import random
import secrets
import time
from typing import Any

import bolt11
import coincurve

REGTEST_CURRENCY = "bcrt"          # BOLT11 prefix lnbcrt
DEFAULT_CLTV_EXPIRY = 80           # LND's default final CLTV delta
PEER_BASE_FEE_MSAT = 1000          # the channel peer's forwarding policy (LND's defaults)
PEER_FEE_PPM = 1
MIN_CHANNEL_SAT = 20_000           # LND's minimum channel size
MAX_EXPIRY_SECONDS = 365 * 24 * 3600
GENESIS_HEIGHT = 101               # the simulated chain's height when the node is made
FUNDING_CONFIRMATIONS = 3         # blocks until an opened channel is active (LND's default)
CSV_DELAY = 144                   # blocks a force-closed channel's own funds wait


class FakeLndError(Exception):
    """An error LND would return: gRPC `code`, HTTP `status`, LND's `message`."""

    def __init__(self, code: int, status: int, message: str) -> None:
        self.code, self.status, self.message = code, status, message
        super().__init__(message)


def not_found(message: str = "unable to locate invoice") -> FakeLndError:
    return FakeLndError(5, 404, message)


def unknown(message: str) -> FakeLndError:
    return FakeLndError(2, 500, message)


def invalid(message: str) -> FakeLndError:
    return FakeLndError(3, 400, message)


def _pubkey(secret_hex: str) -> str:
    return coincurve.PrivateKey(bytes.fromhex(secret_hex)).public_key.format(compressed=True).hex()


def _new_txid() -> str:
    return secrets.token_bytes(32).hex()


class FakeLndState:
    def __init__(self, path: pathlib.Path, clock=time.time) -> None:
        self.path = path
        self.clock = clock
        self.subscribers: set[asyncio.Queue] = set()
        if path.exists():
            self.data = json.loads(path.read_text())
        else:
            self.data = self._genesis()
            self.save()

    def _genesis(self) -> dict[str, Any]:
        node, peer, elsewhere = (secrets.token_bytes(32).hex() for _ in range(3))
        return {
            "node_key": node, "peer_key": peer, "elsewhere_key": elsewhere,
            "add_index": 0, "settle_index": 0, "payment_index": 0, "wallet_sat": 10_000_000,
            "invoices": {}, "elsewhere": {}, "payments": {},
            "channels": [self._channel(_pubkey(peer), 1_000_000, 500_000, 500_000, 1)],
            "chain": self._chain_view(GENESIS_HEIGHT, True),
        }

    def _chain_view(self, height: int, synced: bool) -> dict:
        return {"block_height": height, "synced_to_chain": synced, "best_header_timestamp": int(self.clock())}

    @staticmethod
    def _channel(remote_pubkey: str, capacity: int, local_sat: int, remote_sat: int, block: int) -> dict:
        return {"chan_id": (100 + block) << 40 | 1 << 16, "channel_point": f"{_new_txid()}:0",
                "remote_pubkey": remote_pubkey, "capacity": capacity, "local_msat": local_sat * 1000,
                "remote_msat": remote_sat * 1000, "active": True, "initiator": True,
                "sent_msat": 0, "received_msat": 0, "num_updates": 0, "status": "active"}

    def channels_in(self, *statuses: str) -> list[dict]:
        """Channels by lifecycle: pending_open -> active -> closing or force_closing -> gone
        (a state file from before the lifecycle holds active channels only)."""
        return [c for c in self.data["channels"] if c.get("status", "active") in statuses]

    def _advance_channels(self, height: int) -> None:
        """What the new blocks do: funding confirmed, closing transactions confirmed, force-closed
        funds matured."""
        for c in list(self.data["channels"]):
            status = c.get("status", "active")
            if status == "pending_open" and height >= c["funding_height"] + FUNDING_CONFIRMATIONS - 1:
                c.update(status="active", active=True)
            elif status == "closing" and height > c["closing_height"]:
                self._gone(c)
            elif status == "force_closing" and height >= c["maturity_height"]:
                self._gone(c)

    def _gone(self, channel: dict) -> None:
        self.data["channels"].remove(channel)
        self.data["wallet_sat"] += channel["local_msat"] // 1000
        self.data.setdefault("closed_channels", []).append(
            {"channel_point": channel["channel_point"], "closing_tx_hash": channel["closing_txid"],
             "remote_pubkey": channel["remote_pubkey"], "capacity": channel["capacity"],
             "settled_balance": channel["local_msat"] // 1000,
             "close_type": "LOCAL_FORCE_CLOSE" if channel["status"] == "force_closing" else "COOPERATIVE_CLOSE"})

    # --- peers -----------------------------------------------------------------------------

    def peers(self) -> list[dict]:
        """Connected peers: the channel peer from the start, then those `connect_peer` added."""
        listed = self.data.setdefault("peers", [{"pub_key": _pubkey(self.data["peer_key"]), "address": "127.0.0.1:9735"}])
        return listed

    def connect_peer(self, pubkey: str, host: str) -> None:
        try:
            coincurve.PublicKey(bytes.fromhex(pubkey))
        except Exception as exc:
            raise unknown(f"unable to decode pubkey: {exc}") from exc
        if pubkey == self.pubkey:
            raise unknown("cannot make connection to self")
        if not host or ":" not in host:
            raise unknown(f"unable to parse host {host!r}")
        if any(p["pub_key"] == pubkey for p in self.peers()):
            raise unknown(f"already connected to peer: {pubkey}@{host}")
        self.data["peers"].append({"pub_key": pubkey, "address": host})
        self.save()

    def save(self) -> None:
        """Write the whole state atomically: a temporary file, fsync, rename, fsync the folder."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(self.data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @property
    def pubkey(self) -> str:
        return _pubkey(self.data["node_key"])

    # --- invoices -------------------------------------------------------------------------

    def _encode(self, key: str, payment_hash: str, amount_msat: int, memo: str, created: int, expiry: int,
                payment_addr: str) -> str:
        tags = bolt11.Tags()
        tags.add(bolt11.TagChar.payment_hash, payment_hash)
        tags.add(bolt11.TagChar.payment_secret, payment_addr)
        tags.add(bolt11.TagChar.description, memo)
        tags.add(bolt11.TagChar.expire_time, expiry)
        tags.add(bolt11.TagChar.min_final_cltv_expiry, DEFAULT_CLTV_EXPIRY)
        invoice = bolt11.Bolt11(currency=REGTEST_CURRENCY, date=created, tags=tags,
                                amount_msat=bolt11.MilliSatoshi(amount_msat) if amount_msat else None)
        return bolt11.encode(invoice, key)

    def _make_invoice(self, key: str, amount_msat: int, memo: str, expiry: int) -> dict:
        if amount_msat < 0:
            raise invalid("amount cannot be negative")
        if not 0 < expiry <= MAX_EXPIRY_SECONDS:
            raise invalid(f"expiry of {expiry} seconds is out of range, the maximum is {MAX_EXPIRY_SECONDS}")
        if len(memo.encode()) > 1024:
            raise invalid("memo too large: 1024 bytes max")
        preimage = secrets.token_bytes(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        payment_addr = secrets.token_bytes(32).hex()
        created = int(self.clock())
        return {"r_preimage": preimage.hex(), "r_hash": payment_hash, "memo": memo, "value_msat": amount_msat,
                "creation_date": created, "expiry": expiry, "cltv_expiry": DEFAULT_CLTV_EXPIRY,
                "payment_addr": payment_addr, "add_index": 0, "settle_index": 0, "settle_date": 0,
                "amt_paid_msat": 0, "state": "OPEN",
                "payment_request": self._encode(key, payment_hash, amount_msat, memo, created, expiry, payment_addr)}

    def add_invoice(self, amount_msat: int, memo: str, expiry: int) -> dict:
        invoice = self._make_invoice(self.data["node_key"], amount_msat, memo, expiry)
        self.data["add_index"] += 1
        invoice["add_index"] = self.data["add_index"]
        self.data["invoices"][invoice["r_hash"]] = invoice
        self.save()
        self._publish(invoice)
        return invoice

    def add_elsewhere_invoice(self, amount_msat: int, memo: str, expiry: int = 3600) -> dict:
        invoice = self._make_invoice(self.data["elsewhere_key"], amount_msat, memo, expiry)
        self.data["elsewhere"][invoice["r_hash"]] = invoice
        self.save()
        return invoice

    def invoice(self, payment_hash: str) -> dict:
        self.expire_due()
        invoice = self.data["invoices"].get(payment_hash)
        if invoice is None:
            raise not_found()
        return invoice

    def expire_due(self) -> None:
        """Cancel every open invoice whose expiry time has passed, as LND's expiry watcher does."""
        now = self.clock()
        changed = False
        for book in ("invoices", "elsewhere"):
            for invoice in self.data[book].values():
                if invoice["state"] == "OPEN" and now >= invoice["creation_date"] + invoice["expiry"]:
                    invoice["state"] = "CANCELED"
                    changed = True
        if changed:
            self.save()

    def cancel_invoice(self, payment_hash: str) -> None:
        invoice = self.data["invoices"].get(payment_hash)
        if invoice is None:
            raise unknown("unable to locate invoice")
        if invoice["state"] == "SETTLED":
            raise unknown("invoice already settled")
        if invoice["state"] != "CANCELED":
            invoice["state"] = "CANCELED"
            self.save()

    def list_invoices(self, index_offset: int, num_max: int, reverse: bool, pending_only: bool) -> list[dict]:
        self.expire_due()
        ordered = sorted(self.data["invoices"].values(), key=lambda i: i["add_index"])
        if pending_only:
            ordered = [i for i in ordered if i["state"] in ("OPEN", "ACCEPTED")]
        if reverse:
            before = [i for i in ordered if index_offset == 0 or i["add_index"] < index_offset]
            return before[-num_max:] if num_max else []
        return [i for i in ordered if i["add_index"] > index_offset][:num_max]

    def settle_from_remote(self, payment_request: str, amount_msat: int | None) -> dict:
        """A remote payer pays one of our invoices over the channel."""
        decoded = self._decode(payment_request)
        invoice = self.data["invoices"].get(decoded.payment_hash)
        if invoice is None:
            raise not_found("the payment request is not one of this node's invoices")
        self.expire_due()
        if invoice["state"] == "SETTLED":
            raise FakeLndError(6, 409, "invoice is already paid")
        if invoice["state"] == "CANCELED":
            raise FakeLndError(9, 400, "invoice expired" if self.clock() >= invoice["creation_date"] +
                               invoice["expiry"] else "invoice canceled")
        paid = invoice["value_msat"] or (amount_msat or 0)
        if paid <= 0 or (amount_msat is not None and amount_msat < invoice["value_msat"]):
            raise invalid("the payment is below the invoice's amount")
        if amount_msat is not None:
            paid = amount_msat
        channel = next((c for c in self.data["channels"] if c["active"] and c["remote_msat"] >= paid), None)
        if channel is None:
            raise FakeLndError(9, 400, "no channel has enough inbound capacity for this payment")
        channel["remote_msat"] -= paid
        channel["local_msat"] += paid
        channel["received_msat"] += paid
        channel["num_updates"] += 2
        # Settle indexes are not contiguous in general: leave gaps, as clients must cope.
        self.data["settle_index"] += random.randint(1, 3)
        invoice.update(state="SETTLED", settle_index=self.data["settle_index"], settle_date=int(self.clock()),
                       amt_paid_msat=paid)
        self.save()
        self._publish(invoice)
        return invoice

    def _publish(self, invoice: dict) -> None:
        for queue in self.subscribers:
            queue.put_nowait(dict(invoice))

    def backlog(self, add_index: int, settle_index: int) -> list[dict]:
        """What SubscribeInvoices replays: added after `add_index`, then settled after
        `settle_index` (0 = nothing), each in index order."""
        invoices = list(self.data["invoices"].values())
        added = sorted((i for i in invoices if add_index and i["add_index"] > add_index),
                       key=lambda i: i["add_index"])
        settled = sorted((i for i in invoices if settle_index and i["state"] == "SETTLED"
                          and i["settle_index"] > settle_index), key=lambda i: i["settle_index"])
        return [dict(i) for i in added + settled]

    # --- payments -------------------------------------------------------------------------

    def _decode(self, payment_request: str) -> bolt11.Bolt11:
        try:
            decoded = bolt11.decode(payment_request)
        except Exception as exc:  # bolt11 raises a variety of errors for a malformed string
            raise unknown(f"invalid payment request: {exc}") from exc
        if decoded.currency != REGTEST_CURRENCY:
            raise unknown("invoice not for current active network 'regtest'")
        return decoded

    def decode(self, payment_request: str) -> dict:
        decoded = self._decode(payment_request)
        return {"destination": decoded.payee, "payment_hash": decoded.payment_hash,
                "num_msat": int(decoded.amount_msat or 0), "timestamp": decoded.date, "expiry": decoded.expiry,
                "description": decoded.description or "", "cltv_expiry": decoded.min_final_cltv_expiry,
                "payment_addr": decoded.payment_secret}

    def start_payment(self, payment_request: str, fee_limit_msat: int, amt_msat: int) -> dict:
        """Checks LND makes before the payment starts (errors end the call); then the payment
        record, IN_FLIGHT."""
        request = self.decode(payment_request)
        if request["destination"] == self.pubkey:
            raise unknown("no self-payments allowed for payment")
        if self.clock() >= request["timestamp"] + request["expiry"]:
            raise unknown("invoice expired")
        amount = request["num_msat"] or amt_msat
        if amount <= 0:
            raise invalid("amount must be specified when paying a zero amount invoice")
        previous = self.data["payments"].get(request["payment_hash"])
        if previous is not None and previous["status"] == "SUCCEEDED":
            raise FakeLndError(6, 409, "invoice is already paid")
        if previous is not None and previous["status"] == "IN_FLIGHT":
            raise FakeLndError(6, 409, "payment is in transition")
        self.data["payment_index"] += 1
        payment = {"payment_hash": request["payment_hash"], "payment_request": payment_request,
                   "value_msat": amount, "fee_msat": 0, "status": "IN_FLIGHT", "failure_reason": "FAILURE_REASON_NONE",
                   "payment_preimage": "0" * 64, "creation_time_ns": int(self.clock() * 1e9),
                   "payment_index": self.data["payment_index"], "destination": request["destination"],
                   "fee_limit_msat": fee_limit_msat}
        self.data["payments"][request["payment_hash"]] = payment
        self.save()
        return payment

    def finish_payment(self, payment_hash: str) -> dict:
        """Route the payment through the channel peer to the invoice "elsewhere"."""
        payment = self.data["payments"][payment_hash]
        amount = payment["value_msat"]
        fee = PEER_BASE_FEE_MSAT + amount * PEER_FEE_PPM // 1_000_000
        target = self.data["elsewhere"].get(payment_hash)
        elsewhere_pubkey = _pubkey(self.data["elsewhere_key"])
        channels = [c for c in self.data["channels"] if c["active"]]
        self.expire_due()
        if payment["destination"] != elsewhere_pubkey or not channels:
            reason = "FAILURE_REASON_NO_ROUTE"
        elif target is None or target["state"] != "OPEN" or amount < target["value_msat"]:
            reason = "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"
        elif fee > payment["fee_limit_msat"]:
            reason = "FAILURE_REASON_NO_ROUTE"
        elif not any(c["local_msat"] >= amount + fee for c in channels):
            reason = "FAILURE_REASON_INSUFFICIENT_BALANCE"
        else:
            reason = None
        if reason is not None:
            payment.update(status="FAILED", failure_reason=reason)
        else:
            channel = next(c for c in channels if c["local_msat"] >= amount + fee)
            channel["local_msat"] -= amount + fee
            channel["remote_msat"] += amount + fee
            channel["sent_msat"] += amount + fee
            channel["num_updates"] += 2
            target.update(state="SETTLED", settle_date=int(self.clock()), amt_paid_msat=amount)
            payment.update(status="SUCCEEDED", fee_msat=fee, payment_preimage=target["r_preimage"])
        self.save()
        return payment

    # --- the node and its view of the chain ----------------------------------------------------

    @property
    def chain(self) -> dict:
        """`block_height`, `synced_to_chain`, `best_header_timestamp` (a state file made before
        the chain view existed reads as synced at the genesis height)."""
        return self.data.get("chain") or self._chain_view(GENESIS_HEIGHT, True)

    def set_chain(self, block_height: int | None, synced_to_chain: bool | None) -> dict:
        """The test's say on the simulated chain: a new height (a new best header now), whether
        the node has caught up with it."""
        view = dict(self.chain)
        if block_height is not None:
            if block_height < 0:
                raise invalid(f"block_height must be at least 0, got {block_height}")
            view.update(block_height=block_height, best_header_timestamp=int(self.clock()))
        if synced_to_chain is not None:
            view["synced_to_chain"] = synced_to_chain
        self.data["chain"] = view
        self._advance_channels(view["block_height"])
        self.save()
        return view

    # --- channels -------------------------------------------------------------------------

    def open_channel(self, node_pubkey: str, funding_sat: int, push_sat: int) -> dict:
        try:
            coincurve.PublicKey(bytes.fromhex(node_pubkey))
        except Exception as exc:
            raise unknown(f"unable to decode node pubkey: {exc}") from exc
        if node_pubkey == self.pubkey:
            raise unknown("cannot open channel to self")
        if not any(p["pub_key"] == node_pubkey for p in self.peers()):
            raise unknown(f"peer {node_pubkey} is not online")
        if funding_sat < MIN_CHANNEL_SAT:
            raise unknown(f"channel size is too small, min is {MIN_CHANNEL_SAT}")
        if not 0 <= push_sat <= funding_sat:
            raise unknown("amount pushed to remote peer for initial state must be below the local funding amount")
        if funding_sat > self.data["wallet_sat"]:
            raise unknown(f"not enough witness outputs to create funding transaction, need {funding_sat} sats, "
                          f"only have {self.data['wallet_sat']} sats available")
        self.data["wallet_sat"] -= funding_sat
        channel = self._channel(node_pubkey, funding_sat, funding_sat - push_sat, push_sat,
                                len(self.data["channels"]) + 1)
        channel.update(status="pending_open", active=False, funding_height=self.chain["block_height"])
        self.data["channels"].append(channel)
        self.save()
        return channel

    def close_channel(self, funding_txid: str, output_index: int, force: bool = False) -> str:
        """A cooperative close waits for its transaction (one block); a forced one for the CSV
        delay. Either way the channel leaves the open list at once."""
        point = f"{funding_txid}:{output_index}"
        channel = next((c for c in self.data["channels"] if c["channel_point"] == point), None)
        if channel is None:
            raise unknown(f"unable to find channel {point}")
        status = channel.get("status", "active")
        if status == "pending_open":
            raise unknown(f"cannot close pending channel {point}: wait for its funding to confirm")
        if status in ("closing", "force_closing"):
            raise unknown(f"channel {point} is already being closed")
        height = self.chain["block_height"]
        channel.update(status="force_closing" if force else "closing", active=False, closing_txid=_new_txid(),
                       closing_height=height, maturity_height=height + CSV_DELAY)
        self.save()
        return channel["closing_txid"]
