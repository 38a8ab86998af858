"""Run work only while this process leads (ports/leadership.py): wait as a standby, lead, and
go back to waiting if the leadership is lost (its database connection dropped)."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from kaccy_bitcoin.ports.leadership import Leadership

log = logging.getLogger(__name__)


class RunAsLeader:
    """`work(stop)` runs while this process holds the leadership; `stop` is set when the caller's
    `stop` is, or when the leadership is lost. A standby tries to take it every `retry` seconds
    (keep it at most the monitor's poll interval: a dead leader is replaced within it); the
    leader checks it still holds it as often. `on_change` hears "standby", "leader" and "lost"."""

    def __init__(self, leadership: Leadership, retry: float) -> None:
        self._lead = leadership
        self._retry = retry

    async def __call__(self, work: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event,
                       on_change: Callable[[str], None] = lambda _: None) -> None:
        try:
            standby_said = False
            while not stop.is_set():
                if not await self._lead.try_acquire():
                    if not standby_said:
                        on_change("standby")
                        standby_said = True
                    await _wait(stop, self._retry)
                    continue
                standby_said = False
                on_change("leader")
                inner = asyncio.Event()
                watch = asyncio.create_task(self._watch(stop, inner))
                try:
                    await work(inner)
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
                if not stop.is_set():
                    on_change("lost")
        finally:
            await self._lead.release()

    async def _watch(self, stop: asyncio.Event, inner: asyncio.Event) -> None:
        while not await _wait(stop, self._retry):
            if not await self._lead.held():
                log.warning("the leadership (%s) was lost; stopping the monitors", self._lead.describe)
                break
        inner.set()


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """True if `event` was set within `timeout` seconds."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except asyncio.TimeoutError:
        return False
