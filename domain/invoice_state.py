"""The Lightning invoice state machine.

LND's invoice states map onto it: OPEN is OPEN, ACCEPTED (HTLCs held, not yet settled) is
PENDING, SETTLED is SETTLED, and CANCELED is EXPIRED, reached by `expire` when the invoice's
expiry time had passed (LND cancels expired invoices itself) or by `cancel` when someone
canceled it before then. Only what LND reports moves an invoice: a settlement LND has not
reported is never assumed, and an invoice is never given up on while LND may still settle it.
"""
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
        ("cancel", ("OPEN", "PENDING"), "EXPIRED"),
    )
