"""The PayJoin receiving session's state machine (domain/payjoin_session.py)."""
from __future__ import annotations

import enum

from kaccy_bitcoin.domain.statemachine import StateMachine, moves


class PayjoinState(enum.Enum):
    OFFERED = "OFFERED"          # the order's bip21 carries pj=; no original yet
    PROPOSED = "PROPOSED"        # a proposal was answered; our coin is reserved
    JOINED = "JOINED"            # the proposal's transaction is in the mempool or a block
    SUPERSEDED = "SUPERSEDED"    # the sender spent its inputs otherwise (its original, or another spend)
    FALLBACK = "FALLBACK"        # nothing seen in time: we broadcast the original


class PayjoinMachine(StateMachine):
    NAME = "payjoin_session"
    States = PayjoinState
    INITIAL = PayjoinState.OFFERED
    TERMINAL = frozenset({PayjoinState.JOINED})
    MOVES = moves(
        ("propose", "OFFERED", "PROPOSED"),
        ("join", ("PROPOSED", "SUPERSEDED", "FALLBACK"), "JOINED"),
        ("supersede", "PROPOSED", "SUPERSEDED"),
        ("fall_back", "PROPOSED", "FALLBACK"),
    )
