"""Which schema revision a database is at, checked each time one is opened.

Alembic manages the kaccy_ tables (the scripts are in `adapters/sql/migrations`). The
check costs one query of the version table against `HEAD`, outside any transaction (it
waits for no writer); Alembic itself is imported only to create a new database or by
`kaccy-bitcoin db upgrade`.
"""
from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from kaccy_bitcoin.adapters.sql.errors import DatabaseOutdated, DatabaseTooNew, StorageError

# Every revision, oldest first; the last is the one this code reads and writes.
# tests/test_migrations.py checks this against the scripts' own chain.
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010", "0011")
HEAD = REVISIONS[-1]
# Prefixed like the tables, so an embedding application's own Alembic table is left alone.
VERSION_TABLE = "kaccy_alembic_version"
TABLE_PREFIX = "kaccy_"
UPGRADE = "run `kaccy-bitcoin db upgrade`"


def stored_revision(engine: Engine) -> tuple[str, ...] | None:
    """The revisions stamped in the version table (one, on a linear history), or None when
    there is no version table (a new database, or one written before Alembic)."""
    for _ in range(3):
        with engine.connect() as conn:
            raw = conn.connection
            cursor = raw.cursor()
            try:
                cursor.execute(f"SELECT version_num FROM {VERSION_TABLE}")
                return tuple(sorted(row[0] for row in cursor.fetchall()))
            except engine.dialect.loaded_dbapi.Error:
                raw.rollback()   # PostgreSQL: the failed statement ended the transaction
            finally:
                cursor.close()
        if not inspect(engine).has_table(VERSION_TABLE):
            return None
        # Another process created the database between the two looks: read it again.
    raise StorageError(f"cannot read the schema revision from {VERSION_TABLE}")


def ensure_current(engine: Engine) -> None:
    """Return when the database is at HEAD; create it there when it is new and empty;
    refuse anything else (DatabaseOutdated, DatabaseTooNew) without writing."""
    stamped = stored_revision(engine)
    if stamped == (HEAD,):
        return
    if not stamped:
        from kaccy_bitcoin.adapters.sql import migrations   # Alembic: a new database, once

        migrations.create_if_empty(engine)
        return
    raise refusal(stamped)


def refusal(stamped: tuple[str, ...]) -> StorageError:
    """The error for a database stamped with revisions other than HEAD."""
    if len(stamped) == 1 and stamped[0] in REVISIONS:
        return DatabaseOutdated(f"the database is at schema revision {stamped[0]} and this release needs "
                                f"{HEAD}: {UPGRADE}")
    return DatabaseTooNew(f"the database is at schema revision {', '.join(stamped)}, which this release "
                          f"does not know (it knows {REVISIONS[0]} to {HEAD}): a newer release of "
                          "kaccy-bitcoin upgraded it; use that release or a newer one")


def pre_alembic() -> DatabaseOutdated:
    return DatabaseOutdated("the database was written by a release from before schema revisions "
                            f"(its kaccy_ tables are not stamped): {UPGRADE}")
