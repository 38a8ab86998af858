"""The Lightning invoice state machine."""
from __future__ import annotations

import enum

from kaccy_bitcoin.domain.statemachine import StateMachine, moves


class InvoiceState(enum.Enum):
    OPEN = "OPEN"
    PENDING = "PENDING"
    SETTLED = "SETTLED"
    EXPIRED = "EXPIRED"


class InvoiceMachine(StateMachine):
    NAME = "lightning_invoice"
    States = InvoiceState
    INITIAL = InvoiceState.OPEN
    TERMINAL = frozenset({InvoiceState.SETTLED, InvoiceState.EXPIRED})
    MOVES = moves(
        ("accept_htlc", "OPEN", "PENDING"),
        ("settle", ("OPEN", "PENDING"), "SETTLED"),
        ("expire", ("OPEN", "PENDING"), "EXPIRED"),
    )
