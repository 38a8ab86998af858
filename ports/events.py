"""Event publishing port."""
from __future__ import annotations

import abc
from typing import Sequence

from kaccy_bitcoin.domain.events import DomainEvent


class EventPublisher(abc.ABC):
    @abc.abstractmethod
    async def publish(self, events: Sequence[DomainEvent]) -> None:
        """Deliver committed events to subscribers; called only after the commit."""
