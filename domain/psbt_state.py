"""The withdrawal (PSBT) state machine: BIP174 roles in order, then what the chain says.

Once a transaction is signed it may be on the network whatever we recorded (a signed
PSBT was printed; a crash can follow `sendrawtransaction`), so every state that a
signed transaction can be in moves to BROADCAST when the chain shows it (`seen`). A
withdrawal the risk review holds waits in HELD, where nothing signs it, until an operator
approves it (back to CREATED) or cancels it. A transaction the node REJECTED for a reason
that passes (its fee below the mempool's floor, a chain of ancestors too long) can be
finalized again and resent. A withdrawal leaves the running only when the
chain settles it: COMPLETED (its own transaction final), REPLACED or VOIDED (a sibling of its family confirmed: an RBF
replacement, or a void spending its inputs back to us), CONFLICTED (a transaction that
is none of ours spent an input).
"""
from __future__ import annotations

import enum

from kaccy_bitcoin.domain.statemachine import StateMachine, moves


class PsbtState(enum.Enum):
    CREATED = "CREATED"
    HELD = "HELD"
    PARTIALLY_SIGNED = "PARTIALLY_SIGNED"
    SIGNED = "SIGNED"
    FINALIZED = "FINALIZED"
    BROADCAST = "BROADCAST"
    CONFIRMED = "CONFIRMED"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    REPLACED = "REPLACED"
    VOIDED = "VOIDED"
    CONFLICTED = "CONFLICTED"


UNSIGNED = ("CREATED", "PARTIALLY_SIGNED")
# Not signed, and nothing may sign it until an operator approves it (the risk review held it).
HELD = ("HELD",)
# Every state whose transaction may exist on the network without being confirmed there.
OFF_CHAIN = ("CREATED", "PARTIALLY_SIGNED", "SIGNED", "FINALIZED", "REJECTED", "EXPIRED",
             "REPLACED", "VOIDED", "CONFLICTED")
# States a losing sibling (or a victim of a foreign spend) can be in when the chain decides.
LOSABLE = ("SIGNED", "FINALIZED", "BROADCAST", "CONFIRMED", "REJECTED", "CONFLICTED")


class PsbtMachine(StateMachine):
    NAME = "psbt"
    States = PsbtState
    INITIAL = PsbtState.CREATED
    TERMINAL = frozenset({PsbtState.COMPLETED})
    MOVES = moves(
        ("hold", "CREATED", "HELD"),
        ("approve", "HELD", "CREATED"),
        ("add_signature", UNSIGNED, "PARTIALLY_SIGNED"),
        ("complete_signatures", UNSIGNED, "SIGNED"),
        ("finalize", "SIGNED", "FINALIZED"),
        ("broadcast", "FINALIZED", "BROADCAST"),
        ("cancel", UNSIGNED + HELD, "REJECTED"),
        ("expire", UNSIGNED, "EXPIRED"),        # a held one waits for its operator
        ("reject", "FINALIZED", "REJECTED"),
        ("resend", "REJECTED", "FINALIZED"),     # refused for a passing reason (mempool floor, chain)
        ("seen", OFF_CHAIN, "BROADCAST"),
        ("confirm", "BROADCAST", "CONFIRMED"),
        ("unconfirm", "CONFIRMED", "BROADCAST"),
        ("complete", "CONFIRMED", "COMPLETED"),
        ("replace", LOSABLE + UNSIGNED, "REPLACED"),
        ("void", LOSABLE + UNSIGNED, "VOIDED"),
        ("conflict", LOSABLE, "CONFLICTED"),
    )
