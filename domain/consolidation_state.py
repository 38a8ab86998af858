"""The UTXO consolidation state machine: a cycle that always returns to IDLE.

Besides the main cycle, an analysis that finds nothing worth doing and a plan that
is abandoned (fees rose, coins were spent, signing or broadcasting failed) both return to
IDLE, and so does a broadcast consolidation whose transaction lost to another (voided,
conflicted), so the machine can never be stuck waiting for a transaction that will not
confirm. The moves are fired by domain/consolidation.py.
"""
from __future__ import annotations

import enum

from kaccy_bitcoin.domain.statemachine import StateMachine, moves


class ConsolidationState(enum.Enum):
    IDLE = "IDLE"
    ANALYZING = "ANALYZING"
    PLANNED = "PLANNED"
    CONSOLIDATING = "CONSOLIDATING"
    COMPLETED = "COMPLETED"


class ConsolidationMachine(StateMachine):
    NAME = "utxo_consolidation"
    States = ConsolidationState
    INITIAL = ConsolidationState.IDLE
    TERMINAL = frozenset()
    MOVES = moves(
        ("analyze", "IDLE", "ANALYZING"),
        ("plan", "ANALYZING", "PLANNED"),
        ("skip", "ANALYZING", "IDLE"),
        ("abandon", ("PLANNED", "CONSOLIDATING"), "IDLE"),
        ("broadcast", "PLANNED", "CONSOLIDATING"),
        ("confirm", "CONSOLIDATING", "COMPLETED"),
        ("reset", "COMPLETED", "IDLE"),
    )
