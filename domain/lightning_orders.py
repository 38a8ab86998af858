"""An order's Lightning invoice: what was asked of the payer, and what LND says became of it.

`OrderInvoice` follows LND's word only: `observe()` takes the invoice as LND reports it
(streamed or looked up) and fires the invoice machine's moves to match, emitting
`invoice_settled` (with the amount paid) or `invoice_expired` (with why) once per invoice:
the event ids are derived from the payment hash, and a state already reached changes
nothing, so the same report seen twice (a replayed stream, a lookup after a reconnect, two
monitors) is harmless.
"""
from __future__ import annotations

import datetime as dt

import attrs

from kaccy_bitcoin.domain.errors import InvalidLightningValue
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.invoice_state import InvoiceMachine, InvoiceState
from kaccy_bitcoin.domain.lightning import CancelReason, LightningInvoice
from kaccy_bitcoin.domain.money import MilliSatoshis

DEFAULT_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 365 * 24 * 3600


def check_expiry(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 < seconds <= MAX_EXPIRY_SECONDS:
        raise InvalidLightningValue(
            f"--expiry must be a whole number of seconds from 1 to {MAX_EXPIRY_SECONDS}, got {seconds!r}")
    return seconds


@attrs.define
class OrderInvoice:
    """One BOLT11 invoice issued for an order (an order may have several over time, one
    open at a time)."""

    order_id: str
    payment_hash: str
    payment_request: str
    amount: MilliSatoshis
    created_at: dt.datetime
    expiry_seconds: int
    machine: InvoiceMachine = attrs.field(factory=InvoiceMachine)
    cancel_reason: CancelReason | None = None
    amount_paid: MilliSatoshis = MilliSatoshis(0)
    settled_at: dt.datetime | None = None
    add_index: int = 0
    settle_index: int = 0
    version: int = 0     # as read; the repository refuses a write over a newer one
    events: list[DomainEvent] = attrs.field(factory=list, eq=False)

    @classmethod
    def issued(cls, order_id: str, invoice: LightningInvoice, at: dt.datetime) -> OrderInvoice:
        """The invoice LND just created for the order."""
        made = cls(order_id=order_id, payment_hash=invoice.payment_hash, payment_request=invoice.payment_request,
                   amount=invoice.amount, created_at=invoice.created_at, expiry_seconds=invoice.expiry_seconds,
                   add_index=invoice.add_index)
        made._emit("invoice_created", at, {"amount_msat": invoice.amount.value,
                                          "payment_request": invoice.payment_request,
                                          "expires_at": made.expires_at.isoformat()})
        return made

    # -- reading ---------------------------------------------------------------
    @property
    def state(self) -> InvoiceState:
        return self.machine.state  # type: ignore[return-value]

    @property
    def is_open(self) -> bool:
        return not self.machine.is_terminal

    @property
    def status(self) -> str:
        """open, pending, settled, expired or canceled: the machine's state, with EXPIRED told
        apart by why it ended."""
        if self.state is InvoiceState.EXPIRED:
            return (self.cancel_reason or CancelReason.EXPIRED).value
        return self.state.value.lower()

    @property
    def expires_at(self) -> dt.datetime:
        return self.created_at + dt.timedelta(seconds=self.expiry_seconds)

    # -- changing --------------------------------------------------------------
    def observe(self, seen: LightningInvoice, at: dt.datetime) -> bool:
        """Move to where LND says the invoice is; True when something changed."""
        if seen.payment_hash != self.payment_hash:
            raise InvalidLightningValue(f"invoice {seen.payment_hash} reported for invoice {self.payment_hash}")
        target = seen.state
        self.add_index = self.add_index or seen.add_index
        if target is self.state or self.machine.is_terminal:
            # Terminal states absorb: LND never moves a settled or canceled invoice again.
            return False
        if target is InvoiceState.PENDING:
            self.machine.fire("accept_htlc", at=at, reason="LND accepted the payer's HTLCs")
            return True
        if target is InvoiceState.SETTLED:
            self.machine.fire("settle", at=at, reason=f"LND settled it (settle index {seen.settle_index})")
            self.amount_paid = seen.amount_paid
            self.settled_at = seen.settled_at or at
            self.settle_index = seen.settle_index
            self._emit("invoice_settled", at, {"amount_msat": self.amount.value,
                                              "amount_paid_msat": seen.amount_paid.value,
                                              "settled_at": self.settled_at.isoformat(),
                                              "settle_index": seen.settle_index})
            return True
        if target is InvoiceState.EXPIRED:
            reason = seen.cancel_reason or CancelReason.EXPIRED
            trigger = "expire" if reason is CancelReason.EXPIRED else "cancel"
            self.machine.fire(trigger, at=at, reason=f"LND canceled it ({reason.value})")
            self.cancel_reason = reason
            self._emit("invoice_expired", at, {"amount_msat": self.amount.value, "reason": reason.value,
                                              "expires_at": self.expires_at.isoformat()})
            return True
        return False   # OPEN again after PENDING: LND never does that; nothing to record

    def take_events(self) -> list[DomainEvent]:
        events, self.events = self.events, []
        return events

    def to_dict(self) -> dict:
        return {"order_id": self.order_id, "payment_hash": self.payment_hash, "state": self.status,
                "amount_msat": self.amount.value, "payment_request": self.payment_request,
                "expires_at": self.expires_at.isoformat(),
                "settled_at": self.settled_at.isoformat() if self.settled_at else None}

    def _emit(self, kind: str, at: dt.datetime, data: dict) -> None:
        self.events.append(DomainEvent(f"{kind}:{self.payment_hash}", kind, self.order_id, at,
                                       {"order_id": self.order_id, "payment_hash": self.payment_hash, **data}))
