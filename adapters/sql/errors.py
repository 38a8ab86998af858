"""Errors of the SQL adapter: the database itself, before any repository gets to work.

Each has a stable `code`; `exit_status` is what the command line exits with (1: something
outside failed, 2: the configuration given was wrong). Messages never show a password.
"""
from __future__ import annotations

from kaccy_bitcoin.domain.errors import KaccyError


class StorageError(KaccyError):
    code = "storage_error"
    exit_status = 1


class DatabaseUnavailable(StorageError):
    """The database could not be reached or opened (server down, file not writable)."""

    code = "database_unavailable"


class DatabaseBusy(StorageError):
    """Another writer held the database's write lock longer than the caller would wait."""

    code = "database_busy"


class DatabaseDriverMissing(StorageError):
    """The URL names a database whose Python driver is not installed."""

    code = "database_driver_missing"


class InvalidDatabaseUrl(StorageError):
    code = "invalid_database_url"
    exit_status = 2


class DatabaseOutdated(StorageError):
    """The tables are at an older schema revision than this code: `kaccy-bitcoin db upgrade`."""

    code = "database_outdated"


class DatabaseTooNew(StorageError):
    """The tables were migrated by a newer release than this one; this code cannot use them."""

    code = "database_too_new"


class SessionsShared(StorageError):
    """The database connection's server session is shared with other clients (PgBouncer in
    transaction or statement pooling): a session advisory lock taken on it is not ours alone,
    so the leadership cannot work there."""

    code = "config_error"
    exit_status = 2
