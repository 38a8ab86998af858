"""The five state machines, in one list (for documentation and property tests)."""
from __future__ import annotations

from kaccy_bitcoin.domain.consolidation_state import ConsolidationMachine
from kaccy_bitcoin.domain.invoice_state import InvoiceMachine
from kaccy_bitcoin.domain.lightning_payout_state import LightningPayoutMachine
from kaccy_bitcoin.domain.payjoin_state import PayjoinMachine
from kaccy_bitcoin.domain.payment_state import PaymentMachine
from kaccy_bitcoin.domain.psbt_state import PsbtMachine
from kaccy_bitcoin.domain.statemachine import StateMachine
from kaccy_bitcoin.domain.swap_state import SwapMachine

ALL_MACHINES: tuple[type[StateMachine], ...] = (
    PaymentMachine, PsbtMachine, SwapMachine, InvoiceMachine, ConsolidationMachine, LightningPayoutMachine,
    PayjoinMachine)


def render_markdown() -> str:
    """docs/state-machines.md: a Mermaid stateDiagram-v2 and a table per machine."""
    lines = [
        "# State machines",
        "",
        "Generated from the machine definitions in `domain/` by",
        "`python scripts/render_state_machines.py > docs/state-machines.md` (`make docs`);",
        "`tests/test_state_docs.py` fails when this file is out of date.",
        "Only the moves listed here exist (`auto_transitions=False`); any other trigger raises",
        "`IllegalTransition` naming the machine, the state and the trigger. Terminal states absorb.",
        "",
    ]
    for machine in ALL_MACHINES:
        terminal = sorted(s.name for s in machine.TERMINAL)
        lines += [f"## {machine.NAME} (`{machine.__module__.rsplit('.', 1)[-1]}.py`)", "",
                  "```mermaid", "stateDiagram-v2", f"    [*] --> {machine.INITIAL.name}"]
        for move in machine.MOVES:
            for source in move.sources:
                lines.append(f"    {source} --> {move.dest}: {move.trigger}")
        for name in terminal:
            lines.append(f"    {name} --> [*]")
        lines += ["```", "", "| trigger | from | to |", "|---|---|---|"]
        for move in machine.MOVES:
            lines.append(f"| `{move.trigger}` | {', '.join(move.sources)} | {move.dest} |")
        lines += ["", f"Initial: {machine.INITIAL.name}. Terminal: {', '.join(terminal) or 'none (cyclic)'}.", ""]
    return "\n".join(lines)
