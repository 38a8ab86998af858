"""Notifier port: tells administrators about discrepancies and alerts."""
from __future__ import annotations

import abc

from kaccy_bitcoin.domain.events import DomainEvent


class Notifier(abc.ABC):
    @abc.abstractmethod
    async def notify(self, event: DomainEvent) -> None:
        """Deliver one event to the people who must act on it."""
