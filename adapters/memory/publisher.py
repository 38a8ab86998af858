"""In-process event publishing: a list of subscribers, and a recorder for tests."""
from __future__ import annotations

import logging
from typing import Awaitable, Callable, Sequence

from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.notifier import Notifier

log = logging.getLogger(__name__)
Subscriber = Callable[[DomainEvent], Awaitable[None]]


class InProcessPublisher(EventPublisher):
    """Hands each event to every subscriber; one failing subscriber does not stop the rest."""

    def __init__(self, subscribers: Sequence[Subscriber] = ()) -> None:
        self.subscribers: list[Subscriber] = list(subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        for event in events:
            for subscriber in self.subscribers:
                try:
                    await subscriber(event)
                except Exception:  # noqa: BLE001 - a subscriber's bug must not lose the rest
                    log.exception("subscriber %r failed on event %s", subscriber, event.id)


class RecordingPublisher(EventPublisher):
    def __init__(self) -> None:
        self.published: list[DomainEvent] = []

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        self.published.extend(events)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.published]


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        self.notified: list[DomainEvent] = []

    async def notify(self, event: DomainEvent) -> None:
        self.notified.append(event)


class LogNotifier(Notifier):
    """Writes discrepancies to the log at WARNING (the default admin channel)."""

    async def notify(self, event: DomainEvent) -> None:
        log.warning("admin notification: %s %s %s", event.kind, event.subject, event.data)
