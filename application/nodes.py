"""Several Bitcoin nodes: the cross-check each monitor round, and showing the nodes.

The cross-check asks every node its tip (ports/bitcoin_node.py NodeSet) and records, once per
episode, when the nodes stop agreeing on the chain (`node_divergence`) and when they agree
again (`node_converged`). The cursor `nodes:agreement` keeps where the last record left things
(its `block_hash` "diverged" or empty, its `height` the number of divergences so far), so each
episode gets the same event ids in every process: the outbox records each once.
"""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.domain.addresses import MonitorCursor
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.nodes import NodeReport
from kaccy_bitcoin.ports.bitcoin_node import NodeSet
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

AGREEMENT = "nodes:agreement"
DIVERGED = "diverged"


def _recorded(mark: MonitorCursor | None) -> tuple[bool, int]:
    return (mark is not None and mark.block_hash == DIVERGED), (mark.height or 0) if mark else 0


class CrossCheckNodes:
    """The first phase of a monitor round with several nodes: classify them, and record a
    change of their agreement with its event (the notifier alerts a divergence)."""

    phase = "nodes"

    def __init__(self, nodes: NodeSet, uow: UnitOfWorkFactory, clock: Clock, publisher: EventPublisher) -> None:
        self._nodes, self._uow, self._clock, self._publisher = nodes, uow, clock, publisher

    async def __call__(self) -> list[DomainEvent]:
        report = await self._nodes.cross_check()
        with self._uow.read() as uow:
            diverged, _ = _recorded(uow.cursors.get(AGREEMENT))
        if diverged == report.diverged:
            return []
        async with self._uow() as uow:
            diverged, episode = _recorded(uow.cursors.get(AGREEMENT))
            if diverged == report.diverged:
                return []
            now = self._clock.now()
            if report.diverged:
                episode += 1
                event = DomainEvent(f"node_divergence:{episode}", "node_divergence", "nodes", now, report.detail)
            else:
                event = DomainEvent(f"node_converged:{episode}", "node_converged", "nodes", now, report.detail)
            uow.record([event])
            uow.cursors.set(AGREEMENT, MonitorCursor(DIVERGED if report.diverged else "", episode))
            uow.commit()
        events = uow.committed_events()
        await self._publisher.publish(events)
        return events


class ShowNodes:
    """`kaccy-bitcoin nodes`: each node's state, tip, latency and version, checked now."""

    def __init__(self, nodes: NodeSet) -> None:
        self._nodes = nodes

    async def __call__(self) -> dict[str, Any]:
        report: NodeReport = await self._nodes.cross_check()
        return report.to_dict()
