"""Leadership over the database the processes share (ports/leadership.py).

PostgreSQL: `pg_try_advisory_lock` on a connection of its own (not from the pool, in
autocommit, so no transaction stays open); the server releases the lock when that
connection ends, which it notices at once when the process dies (its socket closes).
`held` asks the server whether this connection still holds it. TCP keepalives on both ends
bound how long a lock outlives a host that vanished without closing its socket.

SQLite: an exclusive `fcntl.flock` on `<database file>.monitor.lock` (the data dir's
`monitor.lock` for an in-memory database), released by the kernel when the process dies.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from typing import Any, Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from kaccy_bitcoin.ports.leadership import Leadership

# One key per database (advisory locks are per database) and role: what the lock is for.
def _lock_key(role: str) -> int:
    return int.from_bytes(hashlib.sha256(f"kaccy-bitcoin:{role}-leader".encode()).digest()[:8], "big", signed=True)


LOCK_KEY = _lock_key("monitor")
ROLES = ("monitor", "webhooks")   # the monitors; the webhook deliveries (serve's, wherever the monitors run)
# The lock's connection: give up connecting after 10 s, and have both ends probe the other with
# TCP keepalives, so a leader whose host vanished (no socket closed) loses the lock in about
# 25 s (the server's default is to wait two hours), and the leader learns it lost it as soon.
LOCK_CONNECTION = {
    "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3",
}


async def _off_loop(fn: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


class PostgresLeadership(Leadership):
    def __init__(self, engine: Engine, key: int = LOCK_KEY) -> None:
        self._engine = create_engine(engine.url, poolclass=NullPool, connect_args=LOCK_CONNECTION)
        self._key = key
        self._conn: Connection | None = None
        self._holding = False

    @property
    def describe(self) -> str:
        return f"postgresql advisory lock {self._key}"

    async def try_acquire(self) -> bool:
        return await _off_loop(self._try_acquire)

    def _try_acquire(self) -> bool:
        if self._holding and self._held():
            return True
        self._drop()
        try:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._holding = bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar())
        except Exception:  # noqa: BLE001 - the database unreachable: not the leader, try again later
            self._drop()
            return False
        if not self._holding:
            self._drop()
        return self._holding

    async def held(self) -> bool:
        return await _off_loop(self._held)

    def _held(self) -> bool:
        if not self._holding or self._conn is None:
            return False
        try:
            # A bigint key shows in pg_locks as classid (its high 32 bits), objid (low), objsubid 1.
            found = self._conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                "AND granted AND objsubid = 1 AND classid::text = :hi AND objid::text = :lo"),
                {"hi": str((self._key >> 32) & 0xFFFFFFFF), "lo": str(self._key & 0xFFFFFFFF)}).scalar()
        except Exception:  # noqa: BLE001 - the connection is gone, and the lock with it
            self._drop()
            return False
        if not found:
            self._drop()
        return bool(found)

    async def release(self) -> None:
        await _off_loop(self._drop)
        await _off_loop(self._engine.dispose)

    def _drop(self) -> None:
        """Close the lock's connection: the server releases the lock with it."""
        self._holding = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self._conn = None


class FileLeadership(Leadership):
    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    @property
    def describe(self) -> str:
        return f"file lock {self._path}"

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())   # who leads, for a person looking
        self._fd = fd
        return True

    async def held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the only descriptor releases the lock
            self._fd = None


def leadership_for(engine: Engine, data_dir: str, role: str = "monitor") -> Leadership:
    """The leadership lock of `role` (one of ROLES) for the database `engine` opens."""
    if role not in ROLES:
        raise ValueError(f"unknown leadership role {role!r}")
    if engine.url.get_backend_name() == "postgresql":
        return PostgresLeadership(engine, _lock_key(role))
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return FileLeadership(os.path.join(data_dir, f"{role}.lock"))
    return FileLeadership(os.path.abspath(database) + f".{role}.lock")
