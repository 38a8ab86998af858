"""Clock port: the application never reads the time itself, so tests can move it."""
from __future__ import annotations

import abc
import datetime as dt


class Clock(abc.ABC):
    @abc.abstractmethod
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
