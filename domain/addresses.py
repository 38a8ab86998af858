"""The address book: every address handed out, what it is for, and whether it was used."""
from __future__ import annotations

import json

import attrs


@attrs.define
class AddressEntry:
    address: str
    chain: int
    index: int
    label: str = ""
    order_id: str | None = None
    purpose: str = "receive"
    used: bool = False

    def bip329(self, origin: str | None = None) -> str:
        """One BIP329 JSONL record (type "addr") for this address."""
        record: dict[str, object] = {"type": "addr", "ref": self.address}
        label = self.label or (f"order {self.order_id}" if self.order_id else "")
        if label:
            record["label"] = label
        if origin:
            record["origin"] = origin
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


@attrs.frozen
class MonitorCursor:
    """Where the payment monitor's last committed poll ended."""

    block_hash: str
    height: int | None = None
