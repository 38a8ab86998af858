"""Process-level tuning for the long-running service (measured in bench/incoming.py)."""
from __future__ import annotations

import gc
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, clients, caches) out of the cyclic GC's
    reach, so later full collections scan only what polls allocate."""
    gc.collect()
    gc.freeze()


class GcPausedDuring:
    """Runs an async use case with the cyclic GC paused; it runs again between calls.

    A poll of 1,000 orders allocates enough objects to trigger several full collections
    mid-poll (about 100 ms on this machine); reference counting still frees almost all of
    them at once, and anything cyclic is collected after the poll.
    """

    def __init__(self, call: Callable[[], Awaitable[T]]) -> None:
        self._call = call

    async def __call__(self) -> T:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return await self._call()
        finally:
            if was_enabled:
                gc.enable()
