"""Money going out: withdrawals (a PSBT and its lifecycle) and the UTXOs they spend."""
from __future__ import annotations

import datetime as dt

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import InvalidAmount
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.psbt_state import PsbtMachine, PsbtState


@attrs.frozen
class Utxo:
    """An unspent output of the platform's wallet, with where its key lives."""

    outpoint: OutPoint
    amount: Satoshis
    address: str
    confirmations: int
    chain: int | None = None   # 0 receive, 1 change
    index: int | None = None


@attrs.frozen
class WithdrawalOutput:
    address: str
    amount: Satoshis
    change: bool = False

    def __attrs_post_init__(self) -> None:
        if self.amount.value <= 0:
            raise InvalidAmount(f"output to {self.address}: amount must be positive")


@attrs.frozen
class WithdrawalInput:
    outpoint: OutPoint
    amount: Satoshis
    chain: int | None = None   # where its key lives, kept because finalizing drops it from the PSBT
    index: int | None = None


@attrs.define
class Withdrawal:
    """One outgoing transaction from creation to broadcast, persisted at every step."""

    withdrawal_id: str
    created_at: dt.datetime
    inputs: list[WithdrawalInput]
    outputs: list[WithdrawalOutput]
    fee: Satoshis
    psbt: str
    machine: PsbtMachine = attrs.field(factory=PsbtMachine)
    txid: Txid | None = None
    replaces: str | None = None
    replaced_by: str | None = None
    reject_reason: str = ""

    @property
    def state(self) -> PsbtState:
        return self.machine.state  # type: ignore[return-value]

    def outpoints(self) -> list[OutPoint]:
        return [i.outpoint for i in self.inputs]

    def record_signatures(self, psbt: str, complete: bool, at: dt.datetime, signer: str) -> None:
        trigger = "complete_signatures" if complete else "add_signature"
        self.machine.fire(trigger, at=at, reason=f"signed by {signer}")
        self.psbt = psbt

    def finalize(self, psbt: str, txid: Txid, at: dt.datetime) -> None:
        self.machine.fire("finalize", at=at)
        self.psbt = psbt
        self.txid = txid

    def mark_broadcast(self, at: dt.datetime) -> None:
        self.machine.fire("broadcast", at=at)

    def reject(self, reason: str, at: dt.datetime) -> None:
        self.machine.fire("reject", at=at, reason=reason)
        self.reject_reason = reason
