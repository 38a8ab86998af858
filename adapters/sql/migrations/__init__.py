"""Alembic migrations of the kaccy_ tables, driven from code (no alembic.ini).

- `upgrade(engine)` is `kaccy-bitcoin db upgrade`: a database at an older revision is
  migrated to HEAD; one written before Alembic (kaccy_ tables, no version table) is first
  adopted as revision 0001; a new one is created at HEAD.
- `create_if_empty(engine)` is the first use of a new database: the current tables are
  created and stamped HEAD (Alembic's advice for a database built from scratch;
  tests/test_migrations.py keeps the scripts' result equal to those tables).
- `config(...)` is the Alembic configuration for anything else, e.g. a new revision:
  `alembic.command.revision(config(url="sqlite:///scratch.db"), "what changed", autogenerate=True)`
  on a scratch database at HEAD, then `REVISIONS` in `adapters/sql/schema.py`.

Each runs in one transaction that first takes the schema lock (PostgreSQL: an advisory
lock; SQLite: the write lock of BEGIN IMMEDIATE), so two processes doing it at once run
one after the other and the second finds the work done; a failure leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import pathlib
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from kaccy_bitcoin.adapters.sql import schema
from kaccy_bitcoin.adapters.sql.tables import metadata

LOCATION = str(pathlib.Path(__file__).resolve().parent)
_LOCK_KEY = 0x6B616363795F6462   # "kaccy_db": pg_advisory_xact_lock's key for schema changes


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    """Alembic's filter: of the tables, only ours (an embedding application may share the
    database), and not the version table."""
    if type_ == "table":
        return bool(name) and name.startswith(schema.TABLE_PREFIX) and name != schema.VERSION_TABLE
    return True


def config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration: this folder's scripts, run on `connection` (or on `url`)."""
    cfg = Config()
    cfg.set_main_option("script_location", LOCATION)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def create_if_empty(engine: Engine) -> None:
    """A database without kaccy_ tables is created at HEAD; anything else is left untouched
    and refused (a release before Alembic wrote it, or a revision other than HEAD)."""
    with _locked(engine) as conn:
        stamped = _stamped(conn)
        if stamped == (schema.HEAD,):
            return   # another process created it meanwhile
        if stamped:
            raise schema.refusal(stamped)
        if _kaccy_tables(conn):
            raise schema.pre_alembic()
        _create_at_head(conn)


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to HEAD; (the revision it was at, HEAD). Idempotent."""
    with _locked(engine) as conn:
        stamped = _stamped(conn)
        if stamped and (len(stamped) > 1 or stamped[0] not in schema.REVISIONS):
            raise schema.refusal(stamped)
        before = stamped[0] if stamped else None
        if before is None:
            if not _kaccy_tables(conn):
                _create_at_head(conn)
                return None, schema.HEAD
            _adopt(conn)
        if before != schema.HEAD:
            command.upgrade(config(conn), schema.HEAD)
        return before, schema.HEAD


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:   # SQLite: BEGIN IMMEDIATE (see adapters/sql/engine.py)
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        yield conn


def _stamped(conn: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE})
    return tuple(sorted(context.get_current_heads()))


def _kaccy_tables(conn: Connection) -> list[str]:
    return [t for t in inspect(conn).get_table_names()
            if t.startswith(schema.TABLE_PREFIX) and t != schema.VERSION_TABLE]


def _create_at_head(conn: Connection) -> None:
    metadata.create_all(conn)
    command.stamp(config(conn), schema.HEAD)


def _adopt(conn: Connection) -> None:
    """A database of a release before Alembic becomes revision 0001: what that release's
    start-up did (create the tables missing, add kaccy_payments.version to a database from
    before that column), then the stamp."""
    release = scripts().get_revision("0001").module.release_schema()
    release.create_all(conn, checkfirst=True)
    payments = release.tables["kaccy_payments"]
    columns = {c["name"] for c in inspect(conn).get_columns(payments.name)}
    if "version" not in columns:
        operations = Operations(MigrationContext.configure(conn))
        operations.add_column(payments.name, payments.c.version._copy())
    command.stamp(config(conn), "0001")
