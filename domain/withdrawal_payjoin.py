"""What a withdrawal keeps of a payjoin (BIP78) it was sent as: a record without Bitcoin
computation (the storage reads it without loading python-bitcointx)."""
from __future__ import annotations

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.money import Satoshis


@attrs.frozen
class PayjoinSend:
    """A withdrawal sent (or meant to be sent) as a payjoin. `original_txid`: the original we
    signed and handed to the receiver (it may be broadcast by anyone: its coins stay held until
    the chain settles them). While the withdrawal follows the proposal (`proposal_txid` set), the
    original's PSBT, outputs, fee and transaction are kept here, and `inputs` lists every input of
    the proposal in order (ours and the receiver's): what the withdrawal's PSBT must spend."""

    original_txid: Txid
    fallback_reason: str | None = None
    proposal_txid: Txid | None = None
    inputs: tuple[tuple[OutPoint, Satoshis], ...] = ()
    original_psbt: str | None = None
    original_outputs: tuple[tuple[str, int, bool], ...] = ()
    original_fee: Satoshis | None = None
    original_tx: str | None = None
    contribution: Satoshis = Satoshis(0)

    @property
    def used(self) -> bool:
        return self.proposal_txid is not None

    def to_dict(self) -> dict:
        return {"original_txid": self.original_txid.value, "fallback_reason": self.fallback_reason,
                "proposal_txid": self.proposal_txid.value if self.proposal_txid else None,
                "inputs": [[o.txid.value, o.vout, a.value] for o, a in self.inputs],
                "original_psbt": self.original_psbt, "original_outputs": [list(o) for o in self.original_outputs],
                "original_fee_sat": self.original_fee.value if self.original_fee is not None else None,
                "original_tx": self.original_tx, "contribution_sat": self.contribution.value}

    @classmethod
    def from_dict(cls, d: dict | None) -> PayjoinSend | None:
        if not d:
            return None
        return cls(Txid(d["original_txid"]), d.get("fallback_reason"),
                   Txid(d["proposal_txid"]) if d.get("proposal_txid") else None,
                   tuple((OutPoint(Txid(t), v), Satoshis(a)) for t, v, a in d.get("inputs", ())),
                   d.get("original_psbt"), tuple((a, v, bool(c)) for a, v, c in d.get("original_outputs", ())),
                   Satoshis(d["original_fee_sat"]) if d.get("original_fee_sat") is not None else None,
                   d.get("original_tx"), Satoshis(d.get("contribution_sat", 0)))
