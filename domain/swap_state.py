"""The atomic swap (HTLC) state machine."""
from __future__ import annotations

import enum

from kaccy_bitcoin.domain.statemachine import StateMachine, moves


class SwapState(enum.Enum):
    INITIATED = "INITIATED"
    LOCKED = "LOCKED"
    COMPLETED = "COMPLETED"
    REFUNDED = "REFUNDED"
    CANCELLED = "CANCELLED"


class SwapMachine(StateMachine):
    NAME = "atomic_swap"
    States = SwapState
    INITIAL = SwapState.INITIATED
    TERMINAL = frozenset({SwapState.COMPLETED, SwapState.REFUNDED, SwapState.CANCELLED})
    MOVES = moves(
        ("lock", "INITIATED", "LOCKED"),
        ("cancel", "INITIATED", "CANCELLED"),
        ("complete", "LOCKED", "COMPLETED"),
        ("refund", "LOCKED", "REFUNDED"),
    )
