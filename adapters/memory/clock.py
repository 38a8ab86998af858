"""Clocks: the system's, and one a test can move by hand."""
from __future__ import annotations

import datetime as dt

from kaccy_bitcoin.ports.clock import Clock


class SystemClock(Clock):
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


class ManualClock(Clock):
    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, seconds: float) -> dt.datetime:
        self._now += dt.timedelta(seconds=seconds)
        return self._now
