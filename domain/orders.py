"""Orders (payment requests), the payments that settle them, and the matching rules.

A `PaymentRequest` is what the merchant expects: an amount at an address.
A `Payment` is what arrived: every transaction output that paid the address, each
with its depth, plus the payment state machine. Outputs are keyed by outpoint and
recomputed from what the chain says, never added blindly, so seeing the same output
twice (a re-poll, a reorg that re-mines it) can never count it twice.

Every event a payment emits says what was paid: `match` (none / exact / underpaid /
overpaid), `expected_sat` (the order's amount) and `received_sat` (what counts for the
order once the event's own change is applied, unconfirmed outputs included). `order_paid`
is emitted once per order, when the outputs at least `thresholds.confirmed` deep first add
up to the amount less the tolerance; a reorg that takes that away and gives it back does
not emit it again.

A settled Lightning invoice for the order counts too, as money that can no longer go away:
its amount (whole satoshis of what the payer paid) adds to `received_sat` as if infinitely
deep, an order it covers is finalized at once (`settle_offchain`), and a second payment,
on-chain or Lightning, is reported as an overpayment like any other.
"""
from __future__ import annotations

import datetime as dt
import enum
import math
import re
import attrs

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import InvalidOrder, OrderConflict
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds, PaymentMachine, PaymentState
from kaccy_bitcoin.domain.statemachine import Transition
from kaccy_bitcoin.domain.zeroconf import ZeroconfAcceptance, ZeroconfPolicy, ZeroconfRisk

_ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
ORDER_ID_PATTERN = _ORDER_ID.pattern   # the HTTP API documents and checks the same


class MatchStatus(enum.Enum):
    NONE = "none"
    EXACT = "exact"
    UNDERPAID = "underpaid"
    OVERPAID = "overpaid"


def match_amount(expected: Satoshis, received: Satoshis, tolerance: Satoshis) -> MatchStatus:
    """Exact within `tolerance` either side; otherwise under- or overpaid."""
    if received.value == 0:
        return MatchStatus.NONE
    diff = received.value - expected.value
    if abs(diff) <= tolerance.value:
        return MatchStatus.EXACT
    return MatchStatus.OVERPAID if diff > 0 else MatchStatus.UNDERPAID


def _check_order_id(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, str) or not _ORDER_ID.match(value):
        raise InvalidOrder(
            f"order id must be 1-128 characters of letters, digits and ._:@/- "
            f"(starting with a letter or digit), got {value!r}"
        )


@attrs.frozen
class PaymentRequest:
    """An order: the amount a merchant expects at one fresh address."""

    order_id: str = attrs.field(validator=_check_order_id)
    address: str
    amount: Satoshis
    created_at: dt.datetime
    tolerance: Satoshis = Satoshis(0)
    expires_at: dt.datetime | None = None
    label: str = ""
    derivation_index: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.amount.value <= 0:
            raise InvalidOrder(f"order {self.order_id}: amount must be positive, got {self.amount}")
        if self.expires_at is not None and self.expires_at <= self.created_at:
            raise InvalidOrder(f"order {self.order_id}: expiry must be after creation")

    @classmethod
    def new(cls, **terms: object) -> PaymentRequest:
        """A new order, refused unless its terms make sense today. (The constructor also loads
        orders stored by earlier releases, which did not refuse a tolerance this large: those
        must keep loading.)"""
        request = cls(**terms)  # type: ignore[arg-type]
        if request.tolerance.value >= request.amount.value:
            # Within the tolerance of the amount would include receiving nothing at all.
            raise InvalidOrder(
                f"order {request.order_id}: the tolerance of {request.tolerance.value} sat must be smaller "
                f"than the amount of {request.amount.value} sat")
        return request

    def check_same_terms(self, amount: Satoshis) -> None:
        """Creating an order again is idempotent only with the same amount."""
        if amount != self.amount:
            raise OrderConflict(
                f"order {self.order_id} already exists with amount {self.amount.value} sat, "
                f"not {amount.value} sat"
            )

    def is_expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class OutputStatus(enum.Enum):
    ACTIVE = "active"              # in the mempool or a block of the best chain: it counts
    REPLACED = "replaced"          # its transaction was fee-bumped; the new one pays instead
    DOUBLE_SPENT = "double_spent"  # its inputs went elsewhere: the coins are gone
    REORGED_OUT = "reorged_out"    # its block left the chain and it is not in the mempool


@attrs.define
class ReceivedOutput:
    """One transaction output that paid an order's address."""

    outpoint: OutPoint
    amount: Satoshis
    confirmations: int
    first_seen: dt.datetime
    block_hash: str | None = None
    status: OutputStatus = OutputStatus.ACTIVE
    replaced_by: Txid | None = None
    zeroconf_risk: ZeroconfRisk | None = None   # scored when first seen unconfirmed; kept after

    @property
    def counts(self) -> bool:
        return self.status is OutputStatus.ACTIVE

    def to_dict(self) -> dict[str, object]:
        """One line of `order show`'s `payments`."""
        return {"txid": self.outpoint.txid.value, "vout": self.outpoint.vout, "amount_sat": self.amount.value,
                "confirmations": self.confirmations, "status": self.status.value,
                "zeroconf_risk": self.zeroconf_risk.to_dict() if self.zeroconf_risk else None}


@attrs.frozen
class OutputObservation:
    """What the chain says about one output paying an order's address right now.

    `first_seen` is when the node first saw its transaction (None when it did not say):
    lateness is judged by it, not by when the monitor happened to poll."""

    outpoint: OutPoint
    amount: Satoshis
    confirmations: int
    block_hash: str | None = None
    first_seen: dt.datetime | None = None
    zeroconf_risk: ZeroconfRisk | None = None   # for an unconfirmed output: how safe accepting it now is


_FORWARD = {
    PaymentState.PENDING: ("detect", PaymentState.UNCONFIRMED),
    PaymentState.UNCONFIRMED: ("confirm", PaymentState.CONFIRMED),
    PaymentState.CONFIRMED: ("confirm_fully", PaymentState.FULL_CONFIRMED),
    PaymentState.FULL_CONFIRMED: ("finalize", PaymentState.FINALIZED),
}
_BACKWARD = {
    PaymentState.FULL_CONFIRMED: "reorg",
    PaymentState.CONFIRMED: "reorg",
    PaymentState.UNCONFIRMED: "drop",
}
_RANK = {s: i for i, s in enumerate(
    [PaymentState.PENDING, PaymentState.UNCONFIRMED, PaymentState.CONFIRMED,
     PaymentState.FULL_CONFIRMED, PaymentState.FINALIZED])}


@attrs.define
class Payment:
    """Everything received for one order, and how settled it is."""

    order_id: str
    outputs: dict[OutPoint, ReceivedOutput] = attrs.field(factory=dict)
    machine: PaymentMachine = attrs.field(factory=PaymentMachine)
    event_seq: int = 0
    reported_match: tuple[str, int] | None = None
    finality_alerted: bool = False
    paid_reported: bool = False     # order_paid was emitted (never again for this order)
    lightning: dict[str, int] = attrs.field(factory=dict)   # settled invoices: payment hash -> msat paid
    zeroconf: ZeroconfAcceptance | None = None   # accepted before it confirmed (never undone)
    events: list[DomainEvent] = attrs.field(factory=list, eq=False)
    # Outputs the order was accepted on that went away in this change (txid, rival): reported by settle().
    _zeroconf_lost: list[tuple[str, str | None]] = attrs.field(factory=list, eq=False)

    def copy(self) -> Payment:
        """An independent copy (outputs and machine included; pending events are not copied)."""
        return Payment(self.order_id, {op: ReceivedOutput(o.outpoint, o.amount, o.confirmations, o.first_seen,
                                                          o.block_hash, o.status, o.replaced_by, o.zeroconf_risk)
                                       for op, o in self.outputs.items()},
                       PaymentMachine(self.machine.state, self.machine.history), self.event_seq,
                       self.reported_match, self.finality_alerted, self.paid_reported, dict(self.lightning),
                       self.zeroconf)

    # -- reading ---------------------------------------------------------------
    @property
    def state(self) -> PaymentState:
        return self.machine.state  # type: ignore[return-value]

    @property
    def history(self) -> list[Transition]:
        return self.machine.history

    def counted(self) -> list[ReceivedOutput]:
        return [o for o in self.outputs.values() if o.counts]

    @property
    def lightning_sat(self) -> int:
        """Whole satoshis received over Lightning (settled invoices; final)."""
        return sum(self.lightning.values()) // 1000

    @property
    def received(self) -> Satoshis:
        return Satoshis(sum(o.amount.value for o in self.counted()) + self.lightning_sat)

    def match(self, request: PaymentRequest) -> MatchStatus:
        return match_amount(request.amount, self.received, request.tolerance)

    def confirmations(self, request: PaymentRequest) -> int | None:
        """Depth at which the expected amount is covered (deepest outputs first).

        When it is not covered (underpaid), the depth of the shallowest counted
        output; None when nothing counts. Lightning money is deeper than any output:
        when it alone covers the order (or is all there is) this is the deepest
        output's depth, 0 without one.
        """
        depth = self._depth(request)
        if depth is None or depth != math.inf:
            return depth  # type: ignore[return-value]
        return max((max(o.confirmations, 0) for o in self.counted()), default=0)

    def _depth(self, request: PaymentRequest) -> float | None:
        """As `confirmations`, with Lightning money at infinite depth."""
        counted = sorted(self.counted(), key=lambda o: o.confirmations, reverse=True)
        if not counted and not self.lightning:
            return None
        need = request.amount.value - request.tolerance.value
        total = self.lightning_sat
        if self.lightning and total >= need:
            return math.inf
        for out in counted:
            total += out.amount.value
            if total >= need:
                return max(out.confirmations, 0)
        return max(counted[-1].confirmations, 0) if counted else math.inf

    def lightning_covers(self, request: PaymentRequest) -> bool:
        return bool(self.lightning) and self.lightning_sat >= request.amount.value - request.tolerance.value

    def txids(self) -> list[str]:
        return sorted({o.outpoint.txid.value for o in self.counted()})

    def amounts(self, request: PaymentRequest) -> dict[str, object]:
        """What every payment event says about the amount: match, expected and received."""
        received = self.received
        return {"match": match_amount(request.amount, received, request.tolerance).value,
                "expected_sat": request.amount.value, "received_sat": received.value}

    # -- changing --------------------------------------------------------------
    def observe(self, request: PaymentRequest, seen: OutputObservation, at: dt.datetime) -> None:
        """Record what the chain says about an output paying this order."""
        out = self.outputs.get(seen.outpoint)
        if out is None:
            first_seen = seen.first_seen or at
            risk = seen.zeroconf_risk if seen.confirmations <= 0 else None
            out = ReceivedOutput(seen.outpoint, seen.amount, seen.confirmations, first_seen, seen.block_hash,
                                 zeroconf_risk=risk)
            self.outputs[seen.outpoint] = out
            data = {"order_id": self.order_id, "txid": seen.outpoint.txid.value,
                    "vout": seen.outpoint.vout, "amount_sat": seen.amount.value,
                    "confirmations": seen.confirmations, "zeroconf_risk": risk.to_dict() if risk else None}
            self._emit("payment_detected", at, data, request)
            late = self._lateness(request, first_seen)
            if late:
                self._emit("payment_late", at, {**data, "reason": late, "first_seen": first_seen.isoformat()},
                           request)
            return
        if not out.counts:
            out.status = OutputStatus.ACTIVE
            out.replaced_by = None
            self._emit("payment_detected", at, {
                "order_id": self.order_id, "txid": seen.outpoint.txid.value,
                "vout": seen.outpoint.vout, "amount_sat": seen.amount.value,
                "confirmations": seen.confirmations, "revived": True,
                "zeroconf_risk": out.zeroconf_risk.to_dict() if out.zeroconf_risk else None}, request)
        out.confirmations = seen.confirmations
        out.block_hash = seen.block_hash

    def withdraw(self, request: PaymentRequest, outpoint: OutPoint, status: OutputStatus, at: dt.datetime,
                 replaced_by: Txid | None = None) -> None:
        """An output stops counting: replaced, double-spent or reorged out of the chain."""
        out = self.outputs.get(outpoint)
        if out is None or not out.counts or status is OutputStatus.ACTIVE:
            return
        out.status = status
        out.replaced_by = replaced_by
        if (self.zeroconf is not None and status is not OutputStatus.REORGED_OUT
                and outpoint.txid.value in self.zeroconf.txids):
            self._zeroconf_lost.append((outpoint.txid.value, replaced_by.value if replaced_by else None))
        out.confirmations = 0
        out.block_hash = None
        data = {"order_id": self.order_id, "txid": outpoint.txid.value, "vout": outpoint.vout,
                "amount_sat": out.amount.value}
        if status is OutputStatus.REPLACED:
            self._emit("payment_replaced", at, {**data, "replaced_by": replaced_by.value if replaced_by else None},
                       request)
        elif status is OutputStatus.DOUBLE_SPENT:
            self._emit("payment_double_spent", at, data, request)
        else:
            self._emit("payment_reorged", at, {**data, "reason": "transaction left the chain"}, request)

    def settle_lightning(self, request: PaymentRequest, payment_hash: str, paid_msat: int,
                         at: dt.datetime) -> bool:
        """Count a settled Lightning invoice of this order (once per payment hash); `settle()`
        then moves the machine. True when it was new."""
        if payment_hash in self.lightning:
            return False
        self.lightning[payment_hash] = paid_msat
        late = "order_failed" if self.state is PaymentState.FAILED else (
            "order_finalized" if self.state is PaymentState.FINALIZED else None)
        if late:
            self._emit("payment_late", at, {"order_id": self.order_id, "payment_hash": payment_hash,
                                            "amount_msat": paid_msat, "reason": late}, request)
        return True

    def settle(self, request: PaymentRequest, thresholds: ConfirmationThresholds, at: dt.datetime,
               zeroconf: ZeroconfPolicy | None = None) -> None:
        """Walk the state machine to where the counted outputs' depth says it belongs; with a
        zero-conf policy, accept the order before it confirms when the policy allows it."""
        depth = self._depth(request)
        target = thresholds.state_for(depth)  # type: ignore[arg-type]
        state = self.state
        if state is PaymentState.FAILED:
            pass
        elif not self.machine.is_terminal and self.lightning_covers(request):
            self.machine.fire("settle_offchain", at=at, reason="a settled Lightning invoice covers the order")
            self._emit("payment_finalized", at, {"order_id": self.order_id, "confirmations": self.confirmations(request),
                                                 "lightning": sorted(self.lightning)}, request)
        elif state is PaymentState.FINALIZED:
            if _RANK[target] < _RANK[state] and not self.finality_alerted:
                self.finality_alerted = True
                self._emit("payment_reorged", at, {"order_id": self.order_id, "from": state.name,
                                                   "confirmations": depth, "beyond_finality": True}, request)
        else:
            self._walk(request, target, depth, at)
        self._report_match(request, at)
        self._report_paid(request, thresholds, at)
        self._report_zeroconf_lost(request, at)
        if zeroconf is not None:
            self._accept_zeroconf(request, zeroconf, at)

    def expire(self, request: PaymentRequest, at: dt.datetime) -> None:
        """An order past its expiry with nothing received fails; a paid one is kept."""
        if (self.state is PaymentState.PENDING and not self.counted() and not self.lightning
                and request.is_expired(at)):
            self.machine.fire("fail", at=at, reason="expired")
            self._emit("payment_failed", at, {"order_id": self.order_id, "reason": "expired"}, request)

    def take_events(self) -> list[DomainEvent]:
        events, self.events = self.events, []
        return events

    # -- internals -------------------------------------------------------------
    def _walk(self, request: PaymentRequest, target: PaymentState, depth: int | None, at: dt.datetime) -> None:
        while _RANK[self.state] < _RANK[target]:
            trigger, dest = _FORWARD[self.state]  # type: ignore[index]
            self.machine.fire(trigger, at=at, reason=f"{depth} confirmations")
            if dest is PaymentState.CONFIRMED or dest is PaymentState.FULL_CONFIRMED:
                self._emit("payment_confirmed", at, {"order_id": self.order_id, "state": dest.name.lower(),
                                                     "confirmations": depth}, request)
            elif dest is PaymentState.FINALIZED:
                self._emit("payment_finalized", at, {"order_id": self.order_id, "confirmations": depth}, request)
        while _RANK[self.state] > _RANK[target]:
            source = self.state
            trigger = _BACKWARD[source]  # type: ignore[index]
            why = "reorg" if depth is not None else "no counted output left"
            self.machine.fire(trigger, at=at, reason=why)
            if trigger == "reorg":
                self._emit("payment_reorged", at, {"order_id": self.order_id, "from": source.name.lower(),
                                                   "to": self.state.name.lower(), "confirmations": depth}, request)

    def _report_match(self, request: PaymentRequest, at: dt.datetime) -> None:
        received = self.received
        status = match_amount(request.amount, received, request.tolerance)
        key = (status.value, received.value)
        if key == self.reported_match:
            return
        self.reported_match = key
        if status in (MatchStatus.UNDERPAID, MatchStatus.OVERPAID):
            self._emit(f"order_{status.value}", at, {
                "order_id": self.order_id, "difference_sat": received.value - request.amount.value}, request)

    def _report_paid(self, request: PaymentRequest, thresholds: ConfirmationThresholds, at: dt.datetime) -> None:
        """order_paid, once: the outputs at least `thresholds.confirmed` deep cover the amount."""
        if self.paid_reported:
            return
        confirmed = [o for o in self.counted() if o.confirmations >= thresholds.confirmed]
        confirmed_sat = sum(o.amount.value for o in confirmed) + self.lightning_sat
        if confirmed_sat < request.amount.value - request.tolerance.value:
            return
        self.paid_reported = True
        self._emit("order_paid", at, {
            "order_id": self.order_id, "confirmed_sat": confirmed_sat,
            "confirmations": self.confirmations(request), "state": self.state.name.lower(),
            "txids": sorted({o.outpoint.txid.value for o in confirmed}),
            "payment_hashes": sorted(self.lightning)}, request)

    def _accept_zeroconf(self, request: PaymentRequest, policy: ZeroconfPolicy, at: dt.datetime) -> None:
        """order_accepted_zeroconf, once: unconfirmed payments the policy allows complete the order."""
        if self.zeroconf is not None or not policy.enabled or self.state is not PaymentState.UNCONFIRMED:
            return
        pending = [o for o in self.counted() if o.confirmations <= 0]
        if not pending or self.received.value < request.amount.value - request.tolerance.value:
            return
        if not all(policy.allows(o.amount, o.zeroconf_risk) for o in pending):
            return
        if request.expires_at is not None and any(o.first_seen >= request.expires_at for o in pending):
            return   # paid after its expiry (payment_late): for the merchant to decide, not accepted at once
        txids = tuple(sorted({o.outpoint.txid.value for o in pending}))
        self.zeroconf = ZeroconfAcceptance(at, txids, self.received.value)
        self._emit("order_accepted_zeroconf", at, {
            "order_id": self.order_id, "txids": list(txids), "accepted_sat": self.received.value,
            "max_sat": policy.max_sat, "max_score": policy.max_score,
            "payments": [{"txid": o.outpoint.txid.value, "vout": o.outpoint.vout, "amount_sat": o.amount.value,
                          "score": o.zeroconf_risk.score if o.zeroconf_risk else None}
                         for o in sorted(pending, key=lambda o: (o.outpoint.txid.value, o.outpoint.vout))]},
                   request)

    def _report_zeroconf_lost(self, request: PaymentRequest, at: dt.datetime) -> None:
        """zeroconf_double_spend: a payment the order was accepted on was replaced or double-spent
        (once per transaction; the amount lost is what the order now receives short of what it was
        accepted with, replacements that pay it counted)."""
        lost, self._zeroconf_lost = self._zeroconf_lost, []
        if self.zeroconf is None:
            return
        known = set(self.zeroconf.double_spend.txids) if self.zeroconf.double_spend else set()
        txids = sorted({t for t, _ in lost} - known)
        if not txids:
            return
        rivals = sorted({r for t, r in lost if r and t in txids})
        self.zeroconf = self.zeroconf.lost(txids, rivals, self.received.value, at)
        self._emit("zeroconf_double_spend", at, {
            "order_id": self.order_id, "txids": txids, "replaced_by": rivals,
            "amount_lost_sat": self.zeroconf.double_spend.amount_lost_sat,   # type: ignore[union-attr]
            "accepted_sat": self.zeroconf.accepted_sat}, request)

    def _lateness(self, request: PaymentRequest, first_seen: dt.datetime) -> str | None:
        """Why an output first seen (by the node) at `first_seen` came too late, if it did."""
        if self.state is PaymentState.FAILED:
            return "order_failed"
        if self.state is PaymentState.FINALIZED:
            return "order_finalized"
        if request.is_expired(first_seen) and len(self.outputs) == 1:
            return "order_expired"
        return None

    def _emit(self, kind: str, at: dt.datetime, data: dict, request: PaymentRequest) -> None:
        self.event_seq += 1
        self.events.append(DomainEvent(f"{kind}:{self.order_id}:{self.event_seq}", kind,
                                       self.order_id, at, {**data, **self.amounts(request)}))


def unknown_address_event(address: str, seen: OutputObservation, at: dt.datetime) -> DomainEvent:
    """A payment to a watched address that belongs to no order: reported, never dropped."""
    return DomainEvent(f"payment_to_unknown_address:{seen.outpoint}", "payment_to_unknown_address",
                       address, at, {"address": address, "txid": seen.outpoint.txid.value,
                                     "vout": seen.outpoint.vout, "amount_sat": seen.amount.value,
                                     "confirmations": seen.confirmations})

