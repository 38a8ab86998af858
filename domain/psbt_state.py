"""The PSBT (withdrawal signing) state machine, BIP174 roles in order."""
from __future__ import annotations

import enum

from kaccy_bitcoin.domain.statemachine import StateMachine, moves


class PsbtState(enum.Enum):
    CREATED = "CREATED"
    PARTIALLY_SIGNED = "PARTIALLY_SIGNED"
    SIGNED = "SIGNED"
    FINALIZED = "FINALIZED"
    BROADCAST = "BROADCAST"
    REJECTED = "REJECTED"


class PsbtMachine(StateMachine):
    NAME = "psbt"
    States = PsbtState
    INITIAL = PsbtState.CREATED
    TERMINAL = frozenset({PsbtState.BROADCAST, PsbtState.REJECTED})
    MOVES = moves(
        ("add_signature", ("CREATED", "PARTIALLY_SIGNED"), "PARTIALLY_SIGNED"),
        ("complete_signatures", ("CREATED", "PARTIALLY_SIGNED"), "SIGNED"),
        ("finalize", "SIGNED", "FINALIZED"),
        ("broadcast", "FINALIZED", "BROADCAST"),
        ("reject", ("CREATED", "PARTIALLY_SIGNED", "SIGNED", "FINALIZED"), "REJECTED"),
    )
