"""Reading the event outbox: a page of events after a cursor, and a feed that waits for new ones.

Every event is in the audit log with its `seq` from the moment its unit of work commits
(see `UnitOfWork.commit`), so a consumer that keeps the last `seq` it handled and asks
again from there gets everything, in commit order, whatever crashed in between. Delivery
is at least once: a consumer that crashes after handling an event but before it saved (or
acknowledged) its cursor sees that event again; the event `id` lets it skip repeats.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

from kaccy_bitcoin.application.event_limits import MAX_LIMIT, MAX_SEQ
from kaccy_bitcoin.domain.errors import InvalidEventRequest
from kaccy_bitcoin.domain.events import StoredEvent
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

CONSUMER_NAME_MAX = 64


def _check_seq(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise InvalidEventRequest(f"{name} must be a whole number from 0 to {MAX_SEQ}, got {value!r}")
    return value


def _check_consumer(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > CONSUMER_NAME_MAX:
        raise InvalidEventRequest(f"a consumer name is 1 to {CONSUMER_NAME_MAX} characters, got {name!r}")
    return name


def _read(uow: UnitOfWorkFactory, after: int, limit: int) -> list[StoredEvent]:
    with uow.read() as u:
        return u.audit.after(after, limit)


class ListEvents:
    """One page of the outbox: `{"events": [...], "next": SEQ}`, oldest first; `next` is the
    cursor to ask with next time (the last returned seq, or `after` when nothing is new)."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, after: int = 0, limit: int = 100) -> dict[str, Any]:
        page = await self.stored(after, limit)
        return {"events": [s.to_dict() for s in page], "next": page[-1].seq if page else after}

    async def stored(self, after: int = 0, limit: int = 100) -> list[StoredEvent]:
        """The same page as stored events (what the library's `KaccyBitcoin.list_events` gives)."""
        _check_seq("after", after)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidEventRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
        return _read(self._uow, after, limit)


class EventFeed:
    """Events as they are committed, for a consumer embedded in the same program.

    `events()` is an async iterator that never ends: it yields what is stored after the
    cursor, then waits for more by reading the database again, after `first_wait` seconds,
    doubling up to `max_wait` while nothing comes. The reads run on a worker thread, so a
    database busy with a writer never blocks the event loop. A named consumer acknowledges
    what it has handled with `ack()`; a later `events(consumer=...)` starts after that."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, *, batch: int = 100,
                 first_wait: float = 0.05, max_wait: float = 0.5,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self._uow = uow
        self._clock = clock
        self._batch = batch
        self._first_wait = first_wait
        self._max_wait = max_wait
        self._sleep = sleep

    async def events(self, after: int = 0, *, consumer: str | None = None) -> AsyncIterator[StoredEvent]:
        """Every event with a seq above `after` (and above what `consumer` acknowledged), in
        seq order, waiting for new ones for as long as the caller keeps iterating."""
        _check_seq("after", after)
        if consumer is not None:
            after = max(after, await self.acknowledged(consumer))
        loop = asyncio.get_running_loop()
        wait = self._first_wait
        while True:
            page = await loop.run_in_executor(None, _read, self._uow, after, self._batch)
            for stored in page:
                after = stored.seq
                yield stored
            if page:
                wait = self._first_wait
                continue
            await self._sleep(wait)
            wait = min(wait * 2, self._max_wait)

    async def acknowledged(self, consumer: str) -> int:
        """The seq up to which `consumer` has acknowledged (0 for a consumer never seen)."""
        _check_consumer(consumer)
        return await asyncio.get_running_loop().run_in_executor(None, self._acknowledged, consumer)

    def _acknowledged(self, consumer: str) -> int:
        with self._uow.read() as uow:
            return uow.consumers.acknowledged(consumer)

    async def ack(self, consumer: str, seq: int) -> int:
        """Record that `consumer` handled every event up to `seq`; never moves its cursor back.
        Refuses a seq no committed event has yet (that would skip events still to come).
        Returns the consumer's acknowledged seq."""
        _check_consumer(consumer)
        _check_seq("seq", seq)
        return await asyncio.get_running_loop().run_in_executor(None, self._ack, consumer, seq)

    def _ack(self, consumer: str, seq: int) -> int:
        with self._uow() as uow:
            last = uow.audit.last_seq()
            if seq > last:
                raise InvalidEventRequest(f"cannot acknowledge seq {seq}: the newest event is seq {last}")
            acknowledged = uow.consumers.acknowledge(consumer, seq, self._clock.now())
            uow.commit()
        return acknowledged
