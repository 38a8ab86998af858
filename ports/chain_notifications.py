"""Chain notifications port: the node telling us something happened (a block, a transaction).

The monitor polls the node on an interval whatever happens; a notification only makes the
next poll come at once. A notification may be lost (ZMQ drops messages when a subscriber is
slow or reconnecting), so nothing relies on receiving one: the interval poll is the safety net.
"""
from __future__ import annotations

import abc


class ChainNotifications(abc.ABC):
    @property
    @abc.abstractmethod
    def sources(self) -> list[str]:
        """What is subscribed to, for logs (e.g. `["sequence tcp://127.0.0.1:28332"]`); empty
        when the node publishes nothing, and then `wait` only sleeps."""

    @abc.abstractmethod
    async def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a notification: True when one came (every other
        one that arrived meanwhile is consumed with it), False at the timeout."""

