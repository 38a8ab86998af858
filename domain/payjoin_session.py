"""A PayJoin receiving session: one per order, from the token in its `pj=` to the chain's word
on the payment. Its data only; the rules of the proposal are in domain/payjoin.py.

    offered ──proposed──> proposed ──seen──────> joined    (the proposal is in the mempool or a block)
                              │   ──superseded─> superseded (the sender spent its inputs otherwise)
                              └──fallback──────> fallback  (we broadcast the original)

Our coin, reserved at `proposed`, is released once the chain has settled which transaction
spends the sender's inputs: when that transaction has a confirmation (`released`)."""
from __future__ import annotations

import datetime as dt
import secrets

import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import OutputObservation, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import PaymentState
from kaccy_bitcoin.domain.payjoin_state import PayjoinMachine, PayjoinState

__all__ = ["PayjoinMachine", "PayjoinSession", "PayjoinState", "holder", "new_token"]


class PayjoinRefused(DomainError):
    """A BIP78 error answer: `error_code` is one of BIP78's well-known codes."""

    code = "payjoin_refused"

    def __init__(self, error_code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.extra = extra

    def body(self) -> dict[str, object]:
        return {"errorCode": self.error_code, "message": str(self), **self.extra}


def rejected(message: str) -> PayjoinRefused:
    return PayjoinRefused("original-psbt-rejected", message)


def unavailable(message: str) -> PayjoinRefused:
    return PayjoinRefused("unavailable", message)


def new_token() -> str:
    return secrets.token_urlsafe(18)


def holder(token: str) -> str:
    """Who holds our coin in the reservations table (beside withdrawal ids)."""
    return f"payjoin:{token}"


@attrs.define
class PayjoinSession:
    token: str
    order_id: str
    created_at: dt.datetime
    machine: PayjoinMachine = attrs.field(factory=PayjoinMachine, eq=False)   # compared by its history
    original: str | None = None          # base64 PSBT, finalized: what the fallback broadcasts
    original_txid: Txid | None = None
    proposal: str | None = None          # base64 PSBT as answered
    proposal_txid: Txid | None = None
    coin: OutPoint | None = None         # our input
    coin_sat: int = 0
    contributed_sat: int = 0             # our input's value less the fee we paid
    customer_sat: int = 0                # the original's output to the order's address
    proposed_at: dt.datetime | None = None
    released: bool = False               # our coin's reservation was released
    version: int = 0
    events: list[DomainEvent] = attrs.field(factory=list, eq=False)

    @property
    def state(self) -> PayjoinState:
        return self.machine.state  # type: ignore[return-value]

    @property
    def open(self) -> bool:
        """Still followed by the monitor: a proposal given whose coin is not released."""
        return self.state is not PayjoinState.OFFERED and not self.released

    def propose(self, original: str, original_txid: Txid, proposal: str, proposal_txid: Txid, coin: OutPoint,
                coin_sat: int, contributed_sat: int, customer_sat: int, at: dt.datetime) -> None:
        if self.state is not PayjoinState.OFFERED:   # another request proposed first
            raise rejected("a payjoin was already proposed for this order")
        self.machine.fire("propose", at=at, reason=f"original {original_txid.value}")
        self.original, self.original_txid = original, original_txid
        self.proposal, self.proposal_txid = proposal, proposal_txid
        self.coin, self.coin_sat = coin, coin_sat
        self.contributed_sat, self.customer_sat = contributed_sat, customer_sat
        self.proposed_at = at
        self._emit("payjoin_proposed", at, {"original_txid": original_txid.value,
                                            "proposal_txid": proposal_txid.value,
                                            "contributed_sat": contributed_sat, "customer_sat": customer_sat})

    def check_open(self, request: PaymentRequest | None, payment: Payment | None, now: dt.datetime) -> None:
        """An original is taken only for an open, unpaid order with no proposal yet."""
        if self.state is not PayjoinState.OFFERED:
            raise rejected("a payjoin was already proposed for this order")
        if request is None or request.is_expired(now) or (payment is not None and (
                payment.state is not PaymentState.PENDING or payment.counted() or payment.lightning)):
            raise rejected("the order is not open, or already has a payment")

    def customer_share(self, seen: OutputObservation) -> OutputObservation:
        """The proposal's output to the order as the order counts it: what the customer paid
        (the original's output), never our contribution."""
        return attrs.evolve(seen, amount=Satoshis(self.customer_sat))

    def waiting_for_sender(self, now: dt.datetime, after_seconds: float) -> bool:
        """A proposal answered less than `after_seconds` ago: the sender may still send it."""
        return (self.state is PayjoinState.PROPOSED and self.proposed_at is not None
                and (now - self.proposed_at).total_seconds() < after_seconds)

    @property
    def may_fall_back(self) -> bool:
        return self.machine.can("fall_back")

    def joined(self, at: dt.datetime) -> None:
        """The proposal's transaction is live (it may even replace our fallback)."""
        if self.machine.can("join"):
            self.machine.fire("join", at=at, reason=f"proposal {self.proposal_txid} seen")

    def superseded(self, at: dt.datetime, why: str) -> None:
        if self.machine.can("supersede"):
            self.machine.fire("supersede", at=at, reason=why)

    def fell_back(self, at: dt.datetime) -> None:
        self.machine.fire("fall_back", at=at, reason="no transaction seen in time: original broadcast")
        self._emit("payjoin_fallback_broadcast", at, {"original_txid": self.original_txid.value if self.original_txid
                                                      else None, "proposal_txid": self.proposal_txid.value
                                                      if self.proposal_txid else None})

    def release(self, at: dt.datetime, spent_by: Txid | None) -> None:
        self.released = True
        self._emit("payjoin_coin_released", at, {"coin": str(self.coin) if self.coin else None,
                                                 "spent_by": spent_by.value if spent_by else None,
                                                 "state": self.state.name.lower()})

    def take_events(self) -> list[DomainEvent]:
        events, self.events = self.events, []
        return events

    def _emit(self, kind: str, at: dt.datetime, data: dict) -> None:
        self.events.append(DomainEvent(f"{kind}:{self.token}", kind, self.order_id, at,
                                       {"order_id": self.order_id, **data}))
