"""Opening a database (storage.make_engine): the URL, the driver, reaching the server, each
failure typed, and no password in any message.

A plain `postgresql://` URL means psycopg (the driver of the `postgres` extra);
PostgreSQL connections give up after 10 seconds unless the URL says otherwise.
"""
from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError

from kaccy_bitcoin.adapters.sql.errors import DatabaseDriverMissing, DatabaseUnavailable, InvalidDatabaseUrl

POSTGRES_EXTRA = "pip install 'kaccy-bitcoin[postgres]'"
CONNECT_TIMEOUT_SECONDS = 10
PING_AFTER_IDLE_SECONDS = 1.0
_EXAMPLES = "sqlite:///PATH or postgresql+psycopg://USER@HOST/DATABASE"


def shown_url(url: URL) -> str:
    """The URL as it may be printed: no password."""
    return url.render_as_string(hide_password=True)


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        # SQLAlchemy's message repeats the whole text, password included.
        raise InvalidDatabaseUrl(f"KACCY_DATABASE_URL is not a database URL (expected {_EXAMPLES})") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise InvalidDatabaseUrl(f"KACCY_DATABASE_URL {shown_url(parsed)}: no database dialect "
                                 f"{parsed.drivername!r} (expected {_EXAMPLES})") from None
    return parsed


def make_sqlite_folder(url: URL) -> None:
    path = url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create the folder {folder} of the SQLite database: "
                                  f"{exc.strerror or exc}") from None


def server_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        engine = create_engine(url, connect_args=connect_args)
    except ImportError as exc:
        if url.get_backend_name() == "postgresql":
            raise DatabaseDriverMissing("KACCY_DATABASE_URL is a PostgreSQL URL but its driver, psycopg, is "
                                        f"not installed: {POSTGRES_EXTRA}") from None
        raise DatabaseDriverMissing(f"the driver of {shown_url(url)} is not installed ({exc})") from None
    _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: Engine) -> None:
    """Check a pooled connection with a round trip before handing it out, unless it was in use
    less than PING_AFTER_IDLE_SECONDS ago (HikariCP's rule): a server that restarted or
    dropped an idle connection is noticed before a unit of work starts on it, and a busy
    process does not pay a round trip per unit of work. A connection that fails the check is
    replaced (up to twice, by the pool); one lost while busy fails that unit of work with
    DatabaseUnavailable, and the pool then replaces every connection it holds."""

    @event.listens_for(engine, "checkin")
    def _used(dbapi_connection: Any, record: Any) -> None:
        record.info["kaccy_used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        used = record.info.get("kaccy_used_at")
        if used is not None and time.monotonic() - used < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure: the pool opens another connection
            raise DisconnectionError(f"the pooled connection failed its check: {exc}") from exc


def report_unreachable(engine: Engine, url: URL) -> None:
    """From now on a failed connect or a lost connection raises DatabaseUnavailable."""
    shown = shown_url(url)

    @event.listens_for(engine, "handle_error")
    def _unreachable(context: ExceptionContext) -> None:
        if context.is_disconnect or context.connection is None:
            reason = " ".join(line.strip() for line in str(context.original_exception).splitlines())
            raise DatabaseUnavailable(f"cannot connect to the database {shown}: "
                                      f"{reason or type(context.original_exception).__name__}"
                                      ) from context.original_exception
