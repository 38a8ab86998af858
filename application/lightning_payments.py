"""Use cases for paying out over Lightning and looking at the channels (LND)."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.domain.errors import InvalidAmount
from kaccy_bitcoin.domain.money import MilliSatoshis
from kaccy_bitcoin.ports.lightning import LightningNode

DEFAULT_MAX_FEE_SAT = 1_000


class PayInvoice:
    """Pay a BOLT11 request and wait for the node's final answer."""

    def __init__(self, node: LightningNode) -> None:
        self._node = node

    async def __call__(self, payment_request: str, max_fee_sat: int | None = None) -> dict[str, Any]:
        if not payment_request.strip():
            raise InvalidAmount("a payment request (BOLT11) is needed")
        fee = DEFAULT_MAX_FEE_SAT if max_fee_sat is None else max_fee_sat
        if fee < 0:
            raise InvalidAmount(f"--max-fee-sat must not be negative, got {fee}")
        paid = await self._node.pay(payment_request.strip(), max_fee=MilliSatoshis(fee * 1000))
        return {"payment_hash": paid.payment_hash, "state": paid.status.value, "amount_msat": paid.amount.value,
                "fee_msat": paid.fee.value, "failure_reason": paid.failure_reason}


class ListChannels:
    def __init__(self, node: LightningNode) -> None:
        self._node = node

    async def __call__(self) -> dict[str, Any]:
        return {"channels": [{"channel_id": c.channel_id, "capacity_sat": c.capacity_sat,
                              "local_balance_sat": c.local_balance_sat, "remote_balance_sat": c.remote_balance_sat,
                              "active": c.active} for c in await self._node.channels()]}
