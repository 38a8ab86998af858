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
           "VoidedWithdrawal", "LightningPayment", "OrderInvoiceCreated", "OrderInvoice", "Channel", "EventPage",
           "WalletAdded", "WalletBalance", "Limits", "AuditVerification", "AuditEntry", "ConsolidationInput",
           "ConsolidationPlan", "ConsolidationRun", "ConsolidationStatus", "WalletStats", "Stats", "read"]


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
    checkout_url: str | None = None   # the customer's hosted page (KACCY_PUBLIC_URL + /pay/{token})


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
    """A Lightning payout as `ln pay` / `send` / `show` print it (a `held` one waits for
    `approve_ln_payment`, then `send_ln_payment`)."""

    payment_hash: str
    state: str
    amount_msat: int
    fee_msat: int | None = None          # once LND says SUCCEEDED
    failure_reason: str | None = None
    payment_id: str | None = None
    max_fee_msat: int | None = None
    destination: str | None = None
    risk: Risk | None = None
    user: str | None = None
    approved_by: str | None = None

    @classmethod
    def from_dict(cls, answer: Mapping[str, Any]) -> LightningPayment:
        names = {f.name for f in attrs.fields(cls)} - {"risk"}
        risk = answer.get("risk")
        return cls(**{k: v for k, v in answer.items() if k in names},
                   risk=Risk(risk["score"], tuple(risk["reasons"])) if risk else None)


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
    payment_request: str = ""        # the BOLT11 the customer pays
    expires_at: str | None = None


@attrs.frozen
class Channel:
    channel_id: str
    capacity_sat: int
    local_balance_sat: int
    remote_balance_sat: int
    active: bool
    channel_point: str | None = None
    remote_pubkey: str = ""
    state: str = "active"      # active, inactive, pending_open, closing, force_closing
    closing_txid: str | None = None


@attrs.frozen
class EventPage:
    """One page of the outbox, oldest first; `next` is the cursor to ask with next time."""

    events: tuple[StoredEvent, ...]
    next: int


@attrs.frozen
class WalletAdded:
    """`wallet add`: the multisig wallet's descriptors and first receive address."""

    wallet: str
    receive_descriptor: str
    change_descriptor: str
    first_address: str


@attrs.frozen
class WalletBalance:
    """One row of `wallet list`."""

    wallet: str
    policy: str
    confirmed_sat: int
    unconfirmed_sat: int
    utxo_count: int


@attrs.frozen
class Limits:
    """`limits set` / `limits show`: a user's limits (None: no limit) and the platform's daily one."""

    user: str | None = None
    daily_sat: int | None = None
    monthly_sat: int | None = None
    single_max_sat: int | None = None
    hourly_sat: int | None = None
    platform_daily_sat: int | None = None


@attrs.frozen
class AuditVerification:
    """`audit verify`: ok with the number of entries and the chain's head, or where it breaks."""

    ok: bool
    entries: int
    head: str | None = None
    first_bad: int | None = None
    reason: str | None = None


@attrs.frozen
class AuditEntry:
    seq: int
    id: str
    kind: str
    subject: str
    actor: str
    at: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str


@attrs.frozen
class ConsolidationInput:
    txid: str
    vout: int
    amount_sat: int


@attrs.frozen
class ConsolidationPlan:
    """`consolidate plan`: the coins to merge, the fee now and the saving against the long-term rate."""

    wallet: str
    inputs: tuple[ConsolidationInput, ...]
    fee_sat: int
    saving_sat: int
    fee_rate: Any

    @classmethod
    def from_dict(cls, answer: Mapping[str, Any]) -> ConsolidationPlan:
        return cls(answer["wallet"], tuple(read(ConsolidationInput, i) for i in answer["inputs"]),
                   answer["fee_sat"], answer["saving_sat"], answer["fee_rate"])


@attrs.frozen
class ConsolidationRun:
    withdrawal_id: str
    txid: str
    state: str


@attrs.frozen
class ConsolidationStatus:
    wallet: str
    state: str
    withdrawal_id: str | None = None
    inputs: Any = None
    since: str | None = None


@attrs.frozen
class WalletStats:
    wallet: str
    utxo_count: int
    confirmed_sat: int
    unconfirmed_sat: int


@attrs.frozen
class Stats:
    """`stats`: volumes in and out, fees paid, the average confirmation time, each wallet's coins."""

    volume_in_sat: int
    deposits_confirmed: int
    volume_out_sat: int
    withdrawals_confirmed: int
    fees_paid_sat: int
    average_confirmation_seconds: int | None
    wallets: tuple[WalletStats, ...]

    @classmethod
    def from_dict(cls, answer: Mapping[str, Any]) -> Stats:
        return cls(answer["volume_in_sat"], answer["deposits_confirmed"], answer["volume_out_sat"],
                   answer["withdrawals_confirmed"], answer["fees_paid_sat"], answer["average_confirmation_seconds"],
                   tuple(read(WalletStats, w) for w in answer["wallets"]))
