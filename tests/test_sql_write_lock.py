"""SQLite's write lock held by another process: an async write unit of work and a service store
write wait for it off the event loop, in this process's order, and one cancelled while it
waits lets go of what it gets (no write lock left behind)."""
from __future__ import annotations

import asyncio
import sqlite3
import time

from kaccy_bitcoin.adapters.sql.service_store import SqlServiceStore
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine


async def test_writers_wait_for_another_process_off_the_loop(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "lock.db"
    engine = make_engine(f"sqlite:///{path}")
    uows, store = SqlUnitOfWorkFactory(engine), SqlServiceStore(engine)
    other = sqlite3.connect(path, isolation_level=None)   # another process's connection, as SQLite sees it
    other.execute("BEGIN IMMEDIATE")
    done: list[str] = []

    async def allocate(name: str) -> int:
        async with uows() as uow:
            index = uow.addresses.allocate(0)
            uow.commit()
        done.append(name)
        return index

    async def release() -> None:
        await store.run_writing(store.release_idempotency, "key", "idem")
        done.append("store")

    # One cancelled while it waits for the lock: whatever its thread gets is let go.
    cancelled = asyncio.ensure_future(allocate("cancelled"))
    await asyncio.sleep(0.1)
    cancelled.cancel()
    writers = [asyncio.ensure_future(allocate("first")), asyncio.ensure_future(release()),
               asyncio.ensure_future(allocate("second"))]
    ticks, started = 0, time.monotonic()
    while time.monotonic() - started < 1.0:   # the loop keeps turning meanwhile
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks > 50 and done == []
    other.execute("COMMIT")
    assert [await w for w in writers][0::2] == [0, 1]
    assert done == ["first", "store", "second"]
    assert cancelled.cancelled()
    await asyncio.sleep(0.2)
    other.execute("BEGIN IMMEDIATE")   # nobody holds the write lock any more
    other.execute("COMMIT")
    engine.dispose()
