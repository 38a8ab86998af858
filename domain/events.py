"""Named domain events with stable ids, so a consumer can deduplicate."""
from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

EVENT_KINDS = frozenset({
    "payment_detected",
    "payment_confirmed",
    "payment_finalized",
    "payment_reorged",
    "payment_replaced",
    "payment_double_spent",
    "payment_failed",
    "order_underpaid",
    "order_overpaid",
    "order_paid",
    "order_accepted_zeroconf",
    "zeroconf_double_spend",
    "payment_late",
    "payment_to_unknown_address",
    "withdrawal_broadcast",
    "withdrawal_confirmed",
    "withdrawal_completed",
    "withdrawal_reorged",
    "withdrawal_replaced",
    "withdrawal_voided",
    "withdrawal_conflicted",
    "withdrawal_expired",
    "withdrawal_stuck",
    "unexpected_spend",
    "limit_breached",
    # what people and the service do to withdrawals (the audit trail)
    "withdrawal_created",
    "withdrawal_held",
    "withdrawal_approved",
    "withdrawal_signed",
    "withdrawal_finalized",
    "withdrawal_payjoin_proposal",   # a payjoin (BIP78) proposal checked and signed: the withdrawal follows it
    "withdrawal_payjoin_fallback",   # the payjoin failed (fallback_reason): the original is sent
    "withdrawal_sent",
    "withdrawal_rejected",
    "withdrawal_cancelled",
    "withdrawal_void_requested",
    # payouts over Lightning (the same controls as withdrawals)
    "ln_payment",
    "ln_payment_held",
    "ln_payment_approved",
    "ln_payment_cancelled",
    "ln_payment_sent",
    "ln_payment_succeeded",
    "ln_payment_failed",
    # operator actions on the controls
    "limits_set",
    # operator actions on the Lightning node's channels
    "channel_open_requested",
    "channel_close_requested",
    "wallet_added",
    "invoice_created",
    "invoice_settled",
    "invoice_expired",
    "consolidation_planned",
    "consolidation_skipped",
    "consolidation_broadcast",
    "consolidation_completed",
    "consolidation_abandoned",
    "consolidation_proposed",
    # the monitor skipped something it could not handle (once per item and cause)
    "monitor_item_failed",
    # atomic swaps (domain/swaps.py)
    "swap_initiated",
    "swap_funded",
    "swap_locked",
    "swap_preimage_revealed",
    "swap_redeemed",
    "swap_completed",
    "swap_counterparty_claimed",
    "swap_refund_broadcast",
    "swap_refunded",
    "swap_cancelled",
    # PayJoin (BIP78) receiving
    "payjoin_proposed",
    "payjoin_fallback_broadcast",
    "payjoin_coin_released",
    # several Bitcoin nodes (domain/nodes.py): they stopped, or started again, agreeing
    "node_divergence",
    "node_converged",
})

# Kinds an administrator is told about: money that did not arrive as expected.
DISCREPANCY_KINDS = frozenset({
    "order_underpaid",
    "order_overpaid",
    "payment_replaced",
    "payment_reorged",
    "payment_double_spent",
    "zeroconf_double_spend",
    "payment_late",
    "payment_to_unknown_address",
    "withdrawal_stuck",
    "withdrawal_conflicted",
    "withdrawal_reorged",
    "unexpected_spend",
    "withdrawal_held",
    "ln_payment_held",
    "monitor_item_failed",
    "limit_breached",
    "node_divergence",
})


@attrs.frozen
class DomainEvent:
    """Something that happened, named; `id` is the same whenever the same fact is re-derived."""

    id: str
    kind: str
    subject: str
    at: dt.datetime
    data: dict[str, Any] = attrs.field(factory=dict)
    actor: str = "system"   # who caused it: an operator's name, or "system" (the service itself)

    def __attrs_post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")

    @property
    def is_discrepancy(self) -> bool:
        return self.kind in DISCREPANCY_KINDS

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "subject": self.subject,
                "at": self.at.isoformat(), **self.data}


@attrs.frozen
class StoredEvent:
    """An event as the outbox holds it: `seq` is its place in commit order (strictly
    increasing, starting at 1), the cursor a consumer passes back to read what follows."""

    seq: int
    event: DomainEvent

    def __attrs_post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 1:
            raise ValueError(f"an event's sequence number is a whole number from 1, got {self.seq!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.event.to_dict()}
