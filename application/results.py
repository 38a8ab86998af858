"""Typed results of the use cases, for a program that embeds the library.

The use cases answer the command line with plain dicts (its JSON); `from_dict` reads one of
those answers into a frozen attrs object with the same field names, so the library's
results and the command line's output never drift apart. An answer missing a field the
type requires is a bug and fails loudly (TypeError), never a half-filled object.
"""
from __future__ import annotations

from typing import Any, Mapping, TypeVar

import attrs

from kaccy_bitcoin.application.orders import OrderView
from kaccy_bitcoin.domain.events import StoredEvent

T = TypeVar("T")

__all__ = ["OrderCreated", "OrderView", "WithdrawalInput", "WithdrawalOutput", "Risk", "Withdrawal", "WithdrawalStep",
           "VoidedWithdrawal", "LightningPayment", "OrderInvoiceCreated", "OrderInvoice", "Channel", "EventPage", "read"]


def read(cls: type[T], answer: Mapping[str, Any]) -> T:
    """`cls` from a use case's dict: the keys it declares, nested results read by their own `from_dict`."""
    reader = getattr(cls, "from_dict", None)
    if reader is not None:
        return reader(answer)
    names = {f.name for f in attrs.fields(cls)}   # type: ignore[arg-type]
    return cls(**{k: v for k, v in answer.items() if k in names})


@attrs.frozen
class OrderCreated:
    order_id: str
    address: str
    amount_sat: int
    bip21: str


@attrs.frozen
class WithdrawalInput:
    txid: str
    vout: int
    amount_sat: int


@attrs.frozen
class WithdrawalOutput:
    address: str
    amount_sat: int
    change: bool


@attrs.frozen
class Risk:
    """The risk review's verdict on a withdrawal (a `held` one waits for `approve_withdrawal`)."""

    score: int
    reasons: tuple[str, ...]


@attrs.frozen
class Withdrawal:
    """A withdrawal as `withdraw create` / `show` / `bump` / `cpfp` print it."""

    withdrawal_id: str
    state: str
    psbt: str
    fee_sat: int
    inputs: tuple[WithdrawalInput, ...]
    outputs: tuple[WithdrawalOutput, ...]
    kind: str = "payout"
    txid: str | None = None
    confirmations: int | None = None
    replaces: str | None = None
    replaced_by: str | None = None
    reject_reason: str | None = None
    child_of: str | None = None
    conflicted_by: str | None = None
    wallet: str = "default"
    risk: Risk | None = None
    user: str | None = None
    approved_by: str | None = None

    @classmethod
    def from_dict(cls, answer: Mapping[str, Any]) -> Withdrawal:
        names = {f.name for f in attrs.fields(cls)} - {"inputs", "outputs", "risk"}
        risk = answer.get("risk")
        return cls(inputs=tuple(WithdrawalInput(**i) for i in answer["inputs"]),
                   outputs=tuple(WithdrawalOutput(**o) for o in answer["outputs"]),
                   risk=Risk(risk["score"], tuple(risk["reasons"])) if risk else None,
                   **{k: v for k, v in answer.items() if k in names})


@attrs.frozen
class WithdrawalStep:
    """What `sign`, `broadcast` and `cancel` answer: the withdrawal's new state (and its
    PSBT after signing, its txid after broadcasting)."""

    withdrawal_id: str
    state: str
    txid: str | None = None
    psbt: str | None = None


@attrs.frozen
class VoidedWithdrawal:
    """`withdraw void`: the withdrawal (still in its state until the chain decides) and the
    void transaction sent to replace it."""

    withdrawal_id: str
    state: str
    void: Withdrawal

    @classmethod
    def from_dict(cls, answer: Mapping[str, Any]) -> VoidedWithdrawal:
        return cls(answer["withdrawal_id"], answer["state"], Withdrawal.from_dict(answer["void"]))


@attrs.frozen
class LightningPayment:
    payment_hash: str
    state: str
    amount_msat: int
    fee_msat: int
    failure_reason: str | None = None


@attrs.frozen
class OrderInvoiceCreated:
    """`ln invoice create`: the BOLT11 request to show the customer."""

    order_id: str
    payment_request: str
    payment_hash: str
    state: str


@attrs.frozen
class OrderInvoice:
    """`ln invoice show`: the order's newest invoice (state open, pending, settled, expired, canceled)."""

    order_id: str
    payment_hash: str
    state: str
    amount_msat: int
    settled_at: str | None = None


@attrs.frozen
class Channel:
    channel_id: str
    capacity_sat: int
    local_balance_sat: int
    remote_balance_sat: int
    active: bool


@attrs.frozen
class EventPage:
    """One page of the outbox, oldest first; `next` is the cursor to ask with next time."""

    events: tuple[StoredEvent, ...]
    next: int
