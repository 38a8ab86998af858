"""Money going out over Lightning: a payout of a BOLT11 request through LND, held to the same
controls as a withdrawal (limits, risk review, custody tier, audit).

What a payout takes from the limits (its *claim*): the invoice's amount plus the most the
routing may cost (its fee limit), in whole sat rounded up from msat. The fee limit is reserved
up front, as nothing caps what LND spends below it; once LND says SUCCEEDED the claim becomes
the amount plus the fee actually paid (rounded up), and on FAILED it is given back whole.

The fee limit itself is capped: at most KACCY_LN_MAX_FEE_PPM parts per million of the amount
(default 5,000: 0.5 %); a larger `--max-fee-sat` is refused (`fee_too_high`); none given means
the cap.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from kaccy_bitcoin.domain.audit import SYSTEM
from kaccy_bitcoin.domain.errors import FeeTooHigh, InvalidAmount, WithdrawalHeld, WithdrawalStateError
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.lightning import LightningPayment, PaymentStatus
from kaccy_bitcoin.domain.lightning_payout_state import LightningPayoutMachine, LightningPayoutState
from kaccy_bitcoin.domain.money import MilliSatoshis
from kaccy_bitcoin.domain.risk import NO_RISK, RiskAssessment

DEFAULT_MAX_FEE_PPM = 5_000


def sat_up(msat: int) -> int:
    """Whole sat, rounded up: a claim on the limits never counts less than what may be paid."""
    return -(-msat // 1000)


def fee_limit(amount: MilliSatoshis, max_fee_sat: int | None, ppm: int) -> MilliSatoshis:
    """The routing-fee limit of a payout of `amount`: `max_fee_sat` if given and within the
    cap (`ppm` of the amount, rounded down to the msat), else the cap itself."""
    cap = amount.value * ppm // 1_000_000
    if max_fee_sat is None:
        return MilliSatoshis(cap)
    if isinstance(max_fee_sat, bool) or not isinstance(max_fee_sat, int) or max_fee_sat < 0:
        raise InvalidAmount(f"--max-fee-sat must be a whole, non-negative number of sat, got {max_fee_sat!r}")
    if max_fee_sat * 1000 > cap:
        raise FeeTooHigh(cap, f"--max-fee-sat {max_fee_sat} is above the cap of {cap // 1000} sat ({cap} msat): "
                              f"{ppm} ppm of the {amount.value} msat paid (KACCY_LN_MAX_FEE_PPM)")
    return MilliSatoshis(max_fee_sat * 1000)


@attrs.define
class LightningPayout:
    payment_id: str
    payment_request: str
    payment_hash: str
    destination: str                     # the payee's node public key
    amount: MilliSatoshis
    max_fee: MilliSatoshis               # the routing-fee limit handed to LND
    created_at: dt.datetime
    machine: LightningPayoutMachine = attrs.field(factory=LightningPayoutMachine)
    user: str | None = None
    risk: RiskAssessment = NO_RISK
    approved_by: str | None = None
    fee: MilliSatoshis | None = None     # what the routing cost, once LND says SUCCEEDED
    failure_reason: str | None = None
    version: int = attrs.field(default=0, eq=False)   # storage's optimistic-concurrency token

    def __attrs_post_init__(self) -> None:
        if self.amount.value <= 0:
            raise InvalidAmount(f"payment {self.payment_hash}: the payment request names no amount; "
                                "only requests with an amount can be paid out")

    @property
    def state(self) -> LightningPayoutState:
        return self.machine.state  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return self.state.name.lower()

    @property
    def claim_sat(self) -> int:
        """What it takes from the limits: the amount plus the fee limit, or plus the fee paid
        once known; rounded up to the sat."""
        fee = self.fee if self.fee is not None else self.max_fee
        return sat_up(self.amount.value + fee.value)

    def review(self, risk: RiskAssessment, review_score: int, at: dt.datetime) -> DomainEvent | None:
        """Record the risk review's verdict; at or above `review_score` the payout is HELD."""
        self.risk = risk
        if not risk.held(review_score):
            return None
        self.machine.fire("hold", at=at, reason=f"risk score {risk.score}: {', '.join(risk.reasons)}")
        return self.event("ln_payment_held", at, risk=risk.to_dict(), user=self.user)

    def approve(self, operator: str, at: dt.datetime) -> DomainEvent:
        if self.state is not LightningPayoutState.HELD:
            raise WithdrawalStateError(f"Lightning payment {self.payment_id} is {self.name}: only a held payment "
                                       "can be approved")
        self.machine.fire("approve", at=at, reason=f"approved by {operator}")
        self.approved_by = operator
        return self.event("ln_payment_approved", at, actor=operator, risk=self.risk.to_dict())

    def cancel(self, operator: str, at: dt.datetime) -> DomainEvent:
        if not self.machine.can("cancel"):
            raise WithdrawalStateError(f"Lightning payment {self.payment_id} is {self.name}: only a held or "
                                       "pending payment (never handed to LND) can be cancelled")
        self.machine.fire("cancel", at=at, reason=f"cancelled by {operator}")
        return self.event("ln_payment_cancelled", at, actor=operator)

    def send(self, at: dt.datetime) -> DomainEvent | None:
        """Hand it to LND: PENDING -> IN_FLIGHT (an event to commit before LND is called); an
        IN_FLIGHT one may be asked about again (LND never pays a hash twice): no move."""
        if self.state is LightningPayoutState.HELD:
            raise WithdrawalHeld(f"Lightning payment {self.payment_id} is held by the risk review (score "
                                 f"{self.risk.score}: {', '.join(self.risk.reasons)}): an operator must "
                                 "`withdraw approve` it before it is paid")
        if self.state is LightningPayoutState.IN_FLIGHT:
            return None
        if self.state is not LightningPayoutState.PENDING:
            raise WithdrawalStateError(f"Lightning payment {self.payment_id} is {self.name}: nothing to send")
        self.machine.fire("send", at=at)
        return self.event("ln_payment_sent", at)

    def settle(self, result: LightningPayment, at: dt.datetime) -> DomainEvent | None:
        """LND's answer: SUCCEEDED records the fee paid, FAILED its reason; IN_FLIGHT changes nothing."""
        if result.payment_hash != self.payment_hash:
            raise InvalidAmount(f"LND answered about payment {result.payment_hash}, not {self.payment_hash}")
        if self.state is not LightningPayoutState.IN_FLIGHT or result.status is PaymentStatus.IN_FLIGHT:
            return None
        if result.status is PaymentStatus.SUCCEEDED:
            self.fee = result.fee
            self.machine.fire("succeed", at=at)
            return self.event("ln_payment_succeeded", at, fee_msat=result.fee.value)
        self.failure_reason = result.failure_reason
        self.machine.fire("fail", at=at, reason=result.failure_reason or "")
        return self.event("ln_payment_failed", at, failure_reason=result.failure_reason)

    def refused(self, reason: str, at: dt.datetime) -> DomainEvent:
        """LND refused to start the payment this payout handed it (an expired invoice, a
        self-payment...): it paid nothing."""
        self.failure_reason = reason[:200]
        self.machine.fire("fail", at=at, reason="refused by LND")
        return self.event("ln_payment_failed", at, failure_reason=self.failure_reason)

    @property
    def pays_nothing(self) -> bool:
        """Known never to pay: LND said FAILED, or it was cancelled before LND had it."""
        return self.state in (LightningPayoutState.FAILED, LightningPayoutState.CANCELLED)

    def event(self, kind: str, at: dt.datetime, actor: str = SYSTEM, **data: Any) -> DomainEvent:
        body = {"payment_id": self.payment_id, "payment_hash": self.payment_hash, "state": self.name,
                "amount_msat": self.amount.value, "amount_sat": sat_up(self.amount.value),
                "max_fee_msat": self.max_fee.value, "claim_sat": self.claim_sat, **data}
        return DomainEvent(f"{kind}:{self.payment_id}:{len(self.machine.history)}", kind, self.payment_id, at,
                           body, actor)

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "payment_id": self.payment_id, "payment_hash": self.payment_hash, "state": self.name,
            "amount_msat": self.amount.value, "max_fee_msat": self.max_fee.value,
            "fee_msat": self.fee.value if self.fee is not None else None, "failure_reason": self.failure_reason,
            "destination": self.destination, "risk": self.risk.to_dict()}
        if self.user is not None:
            out["user"] = self.user
        if self.approved_by is not None:
            out["approved_by"] = self.approved_by
        return out
