"""Leadership over the database the processes share (ports/leadership.py).

PostgreSQL: `pg_try_advisory_lock` on a connection of its own (not from the pool, in
autocommit, so no transaction stays open); the server releases the lock when that
connection ends, which it notices at once when the process dies (its socket closes).
`held` asks the server whether this connection still holds it. TCP keepalives on both ends
bound how long a lock outlives a host that vanished without closing its socket. The lock
needs a server session of its own: `verify` (at start) and every acquisition check that
no other client shares it (`sessions_shared`), and refuse PgBouncer's transaction pooling.

SQLite: an exclusive `fcntl.flock` on `<database file>.<role>.lock` (the data dir's
`<role>.lock` for an in-memory database), released by the kernel when the process dies.
One lock per role: `monitor`, and `webhooks` for serve's deliveries.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
from typing import Any, Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from kaccy_bitcoin.adapters.sql.errors import SessionsShared
from kaccy_bitcoin.ports.leadership import Leadership

log = logging.getLogger(__name__)

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


_HOLDS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
    "AND granted AND objsubid = 1 AND classid::text = :hi AND objid::text = :lo")
SHARED_SESSIONS = (
    "the PostgreSQL connection's server session is shared with other clients (PgBouncer in transaction or "
    "statement pooling?): the leadership lock is a session advisory lock and needs a session of its own. "
    "Point KACCY_DATABASE_URL at PostgreSQL directly or at a PgBouncer pool in session mode (pool_mode = session)")


def _key_params(key: int) -> dict[str, str]:
    # A bigint key shows in pg_locks as classid (its high 32 bits), objid (low), objsubid 1.
    return {"hi": str((key >> 32) & 0xFFFFFFFF), "lo": str(key & 0xFFFFFFFF)}


def sessions_shared(holder: Connection, other: Connection, key: int, holder_pid: int, rounds: int = 3) -> bool:
    """Whether `holder`, which took advisory lock `key` in a statement that ran on backend
    `holder_pid`, shares server sessions with other clients. On a direct connection (or a
    session-pooled one) a client keeps one backend for its life and no other client gets it.
    Behind transaction pooling each transaction may run on another backend: the next one of
    `other`, a second client, gets the backend holding our lock (PgBouncer hands out the
    server connection released last), or `holder`'s next one runs on a backend without it
    (round-robin). Either is seen; a few rounds leave the pooler little room to hide."""
    params = _key_params(key)
    for _ in range(rounds):
        pid, holds = other.execute(text(f"SELECT pg_backend_pid(), ({_HOLDS.text})"), params).one()
        if pid == holder_pid or holds:
            return True
        pid, holds = holder.execute(text(f"SELECT pg_backend_pid(), ({_HOLDS.text})"), params).one()
        if pid != holder_pid or not holds:
            return True
    return False


def unlock_somewhere(connections: tuple[Connection, ...], key: int, rounds: int = 8) -> None:
    """Best effort, once sessions turned out shared: the lock stays with whichever backend took
    it (the pooler keeps that server connection), so ask each connection's next backend to let
    it go until one of them held it."""
    for _ in range(rounds):
        for conn in connections:
            try:
                if conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key}).scalar():
                    return
            except Exception:  # noqa: BLE001 - best effort
                return


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
            taken, pid = self._conn.execute(text("SELECT pg_try_advisory_lock(:k), pg_backend_pid()"),
                                            {"k": self._key}).one()
            self._holding = bool(taken)
            if self._holding and self._shared(pid):
                unlock_somewhere((self._conn,), self._key)
                self._drop()
                raise SessionsShared(SHARED_SESSIONS)
        except SessionsShared:
            raise
        except Exception as exc:  # noqa: BLE001 - the database unreachable: not the leader, try again later
            self._drop()
            if "statement pooling" in str(exc):   # PgBouncer's own refusal of a transaction
                raise SessionsShared(SHARED_SESSIONS) from None
            return False
        if not self._holding:
            self._drop()
        return self._holding

    def _shared(self, pid: int) -> bool:
        """Checked each time the lock is taken, with a second connection of our own."""
        assert self._conn is not None
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
            return sessions_shared(self._conn, other, self._key, pid)

    async def verify(self) -> None:
        await _off_loop(self._verify)

    def _verify(self) -> None:
        """At start, before any leadership: take a lock of a random key on one connection and
        look for it from a second; refuse when the sessions turn out shared."""
        probe = int.from_bytes(os.urandom(8), "big", signed=True)
        try:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder, \
                    self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
                taken, pid = holder.execute(text("SELECT pg_try_advisory_lock(:k), pg_backend_pid()"),
                                            {"k": probe}).one()
                shared = bool(taken) and sessions_shared(holder, other, probe, pid)
                if taken:
                    unlock_somewhere((holder, other) if shared else (holder,), probe)
        except Exception as exc:  # noqa: BLE001 - unreachable now: try_acquire keeps trying
            if "statement pooling" in str(exc):   # PgBouncer's own refusal of a transaction
                raise SessionsShared(SHARED_SESSIONS) from None
            if "unsupported startup parameter" in str(exc):
                raise SessionsShared(
                    "PgBouncer refuses the leadership lock connection's startup parameter `options` (its TCP "
                    "keepalive settings): add `ignore_startup_parameters = options` to pgbouncer.ini, with "
                    "pool_mode = session, or point KACCY_DATABASE_URL at PostgreSQL directly") from None
            log.warning("could not check the leadership lock's connection: %s", exc)
            return
        if shared:
            raise SessionsShared(SHARED_SESSIONS)

    async def held(self) -> bool:
        return await _off_loop(self._held)

    def _held(self) -> bool:
        if not self._holding or self._conn is None:
            return False
        try:
            found = self._conn.execute(_HOLDS, _key_params(self._key)).scalar()
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
