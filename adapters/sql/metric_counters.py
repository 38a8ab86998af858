"""The figures `/metrics` shows from the database, kept as things happen: `kaccy_metric_counters`
holds one row per figure (`payments:<STATE>`, `withdrawals:<STATE>`, `received_sat`), moved by
triggers on the tables they count, inside the transaction that changes a row. So every process
and every write path (the application's, an operator's SQL) agrees, and a scrape reads a
handful of rows whatever the tables hold, instead of aggregating them.

`received_sat` sums the outputs that are `active` with at least one confirmation. Deleted rows
are taken out again. The trigger bodies are written once here for both dialects; migration 0009
and a new database's `create_all` (tables.py) both install them.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

TABLE = "kaccy_metric_counters"

# (table, counter name of a row as SQL over NEW./OLD., the amount a row adds as SQL)
_COUNTED = (
    ("kaccy_payments", "'payments:' || {r}.state", "1"),
    ("kaccy_withdrawals", "'withdrawals:' || {r}.state", "1"),
    ("kaccy_received_outputs", "'received_sat'",
     "(CASE WHEN {r}.status = 'active' AND {r}.confirmations > 0 THEN {r}.amount_sat ELSE 0 END)"),
)


def _sqlite_triggers(table: str, name: str, amount: str) -> list[str]:
    def add(row: str, sign: str) -> list[str]:
        counter, value = name.format(r=row), amount.format(r=row)
        # Not INSERT OR IGNORE: in a trigger fired by an upsert, SQLite applies the outer
        # statement's conflict handling instead, and the duplicate would abort it.
        return [f"INSERT INTO {TABLE} (name, value) SELECT {counter}, 0 "
                f"WHERE NOT EXISTS (SELECT 1 FROM {TABLE} WHERE name = {counter});",
                f"UPDATE {TABLE} SET value = value {sign} {value} WHERE name = {counter};"]

    changed = f"({name.format(r='OLD')}) IS NOT ({name.format(r='NEW')}) OR " \
              f"({amount.format(r='OLD')}) IS NOT ({amount.format(r='NEW')})"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_count_insert AFTER INSERT ON {table} BEGIN "
        + " ".join(add("NEW", "+")) + " END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_count_update AFTER UPDATE ON {table} WHEN {changed} BEGIN "
        + " ".join(add("OLD", "-") + add("NEW", "+")) + " END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_count_delete AFTER DELETE ON {table} BEGIN "
        + " ".join(add("OLD", "-")) + " END",
    ]


def _postgres_triggers(table: str, name: str, amount: str) -> list[str]:
    def add(row: str, sign: str) -> str:
        return (f"INSERT INTO {TABLE} (name, value) VALUES ({name.format(r=row)}, {sign}{amount.format(r=row)}) "
                f"ON CONFLICT (name) DO UPDATE SET value = {TABLE}.value + EXCLUDED.value;")

    function = f"{table}_count"
    changed = f"({name.format(r='OLD')}) IS DISTINCT FROM ({name.format(r='NEW')}) OR " \
              f"({amount.format(r='OLD')}) IS DISTINCT FROM ({amount.format(r='NEW')})"
    return [
        f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {add('NEW', '')}
  ELSIF TG_OP = 'DELETE' THEN
    {add('OLD', '-')}
  ELSIF {changed} THEN
    {add('OLD', '-')}
    {add('NEW', '')}
  END IF;
  RETURN NULL;
END $$""",
        f"DROP TRIGGER IF EXISTS {function} ON {table}",
        f"CREATE TRIGGER {function} AFTER INSERT OR UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
    ]


def install(conn: Connection) -> None:
    """Create the triggers (the counters table exists), then set every counter from the tables
    as they are now, in the caller's transaction."""
    build = _postgres_triggers if conn.dialect.name == "postgresql" else _sqlite_triggers
    for table, name, amount in _COUNTED:
        for statement in build(table, name, amount):
            conn.execute(text(statement))
    conn.execute(text(f"DELETE FROM {TABLE}"))
    for table, name, amount in _COUNTED:
        conn.execute(text(f"INSERT INTO {TABLE} (name, value) SELECT {name.format(r=table)}, "
                          f"COALESCE(SUM({amount.format(r=table)}), 0) FROM {table} GROUP BY 1"))


def read(conn: Connection) -> dict[str, int]:
    """Every counter: one indexed read of a table of a few dozen rows at most."""
    return {name: int(value) for name, value in conn.execute(text(f"SELECT name, value FROM {TABLE}")).all()}
