"""Running a unit of work again when another process got there first."""
from __future__ import annotations

import logging
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


async def retried(attempt: Callable[[], Awaitable[T]], *, on: type[Exception], why: str, times: int = 3) -> T:
    """Run `attempt` until it does not raise `on` (another writer won a race whose work is
    durable, so trying again from what is committed is safe), at most `times` times; the last
    failure is raised as it is."""
    for n in range(1, times + 1):
        try:
            return await attempt()
        except on:
            if n == times:
                raise
            log.warning("%s; trying again", why)
    raise AssertionError("unreachable")
