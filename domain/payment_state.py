"""The payment state machine: how received funds walk from mempool to finality.

Thresholds (1, 3, 6 confirmations by default) are configurable; a reorg or a
replacement moves a payment back explicitly. A settled Lightning invoice that covers the
order finalizes it at once (`settle_offchain`). FINALIZED and FAILED absorb.
"""
from __future__ import annotations

import enum

import attrs

from kaccy_bitcoin.domain.errors import InvalidOrder
from kaccy_bitcoin.domain.statemachine import StateMachine, moves


class PaymentState(enum.Enum):
    PENDING = "PENDING"
    UNCONFIRMED = "UNCONFIRMED"
    CONFIRMED = "CONFIRMED"
    FULL_CONFIRMED = "FULL_CONFIRMED"
    FINALIZED = "FINALIZED"
    FAILED = "FAILED"


_NON_FINAL = ("PENDING", "UNCONFIRMED", "CONFIRMED", "FULL_CONFIRMED")


class PaymentMachine(StateMachine):
    NAME = "payment"
    States = PaymentState
    INITIAL = PaymentState.PENDING
    TERMINAL = frozenset({PaymentState.FINALIZED, PaymentState.FAILED})
    MOVES = moves(
        ("detect", "PENDING", "UNCONFIRMED"),
        ("confirm", "UNCONFIRMED", "CONFIRMED"),
        ("confirm_fully", "CONFIRMED", "FULL_CONFIRMED"),
        ("finalize", "FULL_CONFIRMED", "FINALIZED"),
        ("reorg", "FULL_CONFIRMED", "CONFIRMED"),
        ("reorg", "CONFIRMED", "UNCONFIRMED"),
        ("drop", "UNCONFIRMED", "PENDING"),
        ("fail", _NON_FINAL, "FAILED"),
        # A Lightning settlement covering the order: final at once, no depth to wait for.
        ("settle_offchain", _NON_FINAL, "FINALIZED"),
    )


FINALITY_HELD = 2**31 - 1   # a depth no payment reaches: finality held (ConfirmationThresholds.held)


@attrs.frozen
class ConfirmationThresholds:
    """Depths at which a payment becomes CONFIRMED, FULL_CONFIRMED and FINALIZED."""

    confirmed: int = 1
    full: int = 3
    final: int = 6

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.confirmed <= self.full <= self.final:
            raise InvalidOrder(
                f"confirmation thresholds must satisfy 1 <= confirmed <= full <= final, "
                f"got {self.confirmed},{self.full},{self.final}"
            )

    def held(self) -> ConfirmationThresholds:
        """The same thresholds with finality out of reach: while the Bitcoin nodes disagree on
        the chain (domain/nodes.py), no payment becomes FINALIZED."""
        return attrs.evolve(self, final=FINALITY_HELD)

    @classmethod
    def parse(cls, text: str) -> ConfirmationThresholds:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise InvalidOrder(f"confirmations must be three integers like 1,3,6, got {text!r}")
        return cls(*(int(p) for p in parts))

    def state_for(self, confirmations: int | None) -> PaymentState:
        """The state funds at this depth belong in (None: nothing received)."""
        if confirmations is None:
            return PaymentState.PENDING
        if confirmations >= self.final:
            return PaymentState.FINALIZED
        if confirmations >= self.full:
            return PaymentState.FULL_CONFIRMED
        if confirmations >= self.confirmed:
            return PaymentState.CONFIRMED
        return PaymentState.UNCONFIRMED
