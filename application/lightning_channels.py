"""Use cases: the Lightning node's channels, listed and managed by an operator (open to a peer,
close cooperatively or by force). Opening and closing are operator actions on the node's money:
each is recorded in the audit trail with who did it, once LND has accepted it."""
from __future__ import annotations

import uuid
from typing import Any

from kaccy_bitcoin.domain.errors import InvalidAmount
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.lightning import ChannelSummary, PeerAddress, parse_channel_point
from kaccy_bitcoin.domain.money import FeeRate
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.lightning import LightningNode
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

MIN_CHANNEL_SAT = 20_000                 # LND's smallest channel
MAX_CHANNEL_SAT = 100_000_000 * 21_000_000


def channel_view(c: ChannelSummary) -> dict[str, Any]:
    return {"channel_id": c.channel_id, "channel_point": str(c.channel_point) if c.channel_point else None,
            "remote_pubkey": c.remote_pubkey, "state": c.state, "capacity_sat": c.capacity_sat,
            "local_balance_sat": c.local_balance_sat, "remote_balance_sat": c.remote_balance_sat,
            "active": c.active, **({"closing_txid": c.closing_txid} if c.closing_txid else {})}


class ListChannels:
    """The open channels, then those opening or closing (`state` says which)."""

    def __init__(self, node: LightningNode) -> None:
        self._node = node

    async def __call__(self) -> dict[str, Any]:
        channels = await self._node.channels()
        pending = await self._node.pending_channels()
        return {"channels": [channel_view(c) for c in [*channels, *pending]]}


async def _audit(uow: UnitOfWorkFactory, clock: Clock, kind: str, subject: str, data: dict[str, Any],
                 by: str) -> None:
    async with uow() as u:
        u.record([DomainEvent(f"{kind}:{uuid.uuid4().hex}", kind, subject, clock.now(), data, by)])
        u.commit()


class OpenChannel:
    def __init__(self, node: LightningNode, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._node = node
        self._uow = uow
        self._clock = clock

    async def __call__(self, peer: str, local_sat: int, push_sat: int = 0, fee_rate: str | int | None = None,
                       by: str = "operator") -> dict[str, Any]:
        address = PeerAddress.parse(peer)
        for name, value, low in (("--local-sat", local_sat, MIN_CHANNEL_SAT), ("--push-sat", push_sat, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_CHANNEL_SAT:
                raise InvalidAmount(f"{name} must be a whole number of sat from {low}, got {value!r}")
        if push_sat >= local_sat:
            raise InvalidAmount(f"--push-sat ({push_sat}) must be less than --local-sat ({local_sat})")
        sat_per_vb = None
        if fee_rate is not None:
            rate = FeeRate.from_sat_per_vb(fee_rate)
            if rate.sat_per_kvb % 1000 or rate.sat_per_kvb == 0:
                raise InvalidAmount(f"--fee-rate must be a whole number of sat/vB of at least 1 (LND's unit), "
                                    f"got {fee_rate!r}")
            sat_per_vb = rate.sat_per_kvb // 1000
        await self._node.connect_peer(address.pubkey, address.host)
        point = await self._node.open_channel(address.pubkey, local_sat, push_sat, sat_per_vbyte=sat_per_vb)
        answer = {"channel_point": str(point), "state": "pending"}
        await _audit(self._uow, self._clock, "channel_open_requested", str(point),
               {"channel_point": str(point), "node": str(address), "local_sat": local_sat, "push_sat": push_sat,
                "fee_rate_sat_per_vb": sat_per_vb}, by)
        return answer


class CloseChannel:
    def __init__(self, node: LightningNode, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._node = node
        self._uow = uow
        self._clock = clock

    async def __call__(self, channel_point: str, force: bool = False, by: str = "operator") -> dict[str, Any]:
        point = parse_channel_point(channel_point)
        txid = await self._node.close_channel(point, force=force)
        await _audit(self._uow, self._clock, "channel_close_requested", str(point),
               {"channel_point": str(point), "closing_txid": txid, "force": force}, by)
        return {"channel_point": str(point), "closing_txid": txid}
