"""The Lightning payout state machine: a payment we make over LND, from the request that the
controls let through (or HELD for an operator) to LND's final answer.

PENDING: admitted, not yet handed to LND (a held payout comes back here when approved).
IN_FLIGHT: handed to LND; committed before LND is called, so a crash in between is found
again as in flight, never as a payment that was not made. LND never pays one payment hash
twice, so asking it again (`ln send`) is safe. SUCCEEDED and FAILED are LND's final answers;
CANCELLED: an operator refused a held (or not yet sent) payout.
"""
from __future__ import annotations

import enum

from kaccy_bitcoin.domain.statemachine import StateMachine, moves


class LightningPayoutState(enum.Enum):
    PENDING = "PENDING"
    HELD = "HELD"
    IN_FLIGHT = "IN_FLIGHT"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class LightningPayoutMachine(StateMachine):
    NAME = "lightning_payout"
    States = LightningPayoutState
    INITIAL = LightningPayoutState.PENDING
    TERMINAL = frozenset({LightningPayoutState.SUCCEEDED, LightningPayoutState.FAILED,
                          LightningPayoutState.CANCELLED})
    MOVES = moves(
        ("hold", "PENDING", "HELD"),
        ("approve", "HELD", "PENDING"),
        ("send", "PENDING", "IN_FLIGHT"),
        ("succeed", "IN_FLIGHT", "SUCCEEDED"),
        ("fail", "IN_FLIGHT", "FAILED"),
        ("cancel", ("PENDING", "HELD"), "CANCELLED"),
    )
