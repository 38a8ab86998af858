"""Leadership port: of several processes sharing one database, one at a time runs the monitors.

A process holds the leadership while a lock only one holder can have is held for it (a
PostgreSQL advisory lock on a connection of its own, a file lock for SQLite); the lock goes
when the process dies, however it dies, so a standby trying again takes over. Leadership saves
the node and the database from duplicate work; it is not what makes the monitor count a
payment once: two monitors polling at the same moment are already safe (a poll commits only if
no other poll committed since it read, see application/monitor.py).
"""
from __future__ import annotations

import abc


class Leadership(abc.ABC):
    @property
    @abc.abstractmethod
    def describe(self) -> str:
        """What the lock is, for logs (e.g. "postgresql advisory lock 7253...")."""

    @abc.abstractmethod
    async def try_acquire(self) -> bool:
        """Take the leadership if nobody holds it; True when this process holds it (now or already)."""

    @abc.abstractmethod
    async def held(self) -> bool:
        """Whether this process still holds it (False once its database connection was lost)."""

    @abc.abstractmethod
    async def release(self) -> None:
        """Give it up (if held); a standby may take it at once."""

    async def verify(self) -> None:
        """Refuse to start (raise a `config_error`) where the lock cannot work, such as a
        PostgreSQL connection whose server session other clients share. Nothing to check by
        default."""
