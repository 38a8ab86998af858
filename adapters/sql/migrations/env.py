"""Alembic's environment for the kaccy_ tables.

Run from code (kaccy_bitcoin.adapters.sql.migrations) on a connection the caller holds in a
transaction, or, for a developer's `alembic.command.*` call, on the configured
`sqlalchemy.url`. Only kaccy_ tables are looked at: an embedding application's tables in
the same database are not ours to compare or change.
"""
from __future__ import annotations

from alembic import context

from kaccy_bitcoin.adapters.sql import schema
from kaccy_bitcoin.adapters.sql.migrations import include_name
from kaccy_bitcoin.adapters.sql.tables import metadata


def run(connection) -> None:  # noqa: ANN001
    context.configure(connection=connection, target_metadata=metadata, version_table=schema.VERSION_TABLE,
                      include_name=include_name, compare_type=True, compare_server_default=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("kaccy-bitcoin migrations run on a database connection only (no --sql scripts): "
                       "revision 0001 creates its tables from its own table definitions")

_connection = context.config.attributes.get("connection")
if _connection is not None:
    run(_connection)
else:
    from kaccy_bitcoin.adapters.sql.storage import make_engine

    _engine = make_engine(context.config.get_main_option("sqlalchemy.url"), check_schema=False)
    with _engine.begin() as _conn:
        run(_conn)
    _engine.dispose()
