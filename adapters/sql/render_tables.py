"""Writes adapters/sql/core_tables.py: the tables of adapters/sql/tables.py as plain SQLAlchemy
Core `Table` objects, which the repositories use at run time.

tables.py (SQLModel) stays the one source of the schema: Alembic, `create_all` and the
migration tests use its metadata. Importing it costs SQLAlchemy's ORM and pydantic (about
80 ms a command), which nothing that only reads and writes rows needs, so the Core copy is
generated from it: `python scripts/render_core_tables.py > adapters/sql/core_tables.py`
(`make tables`). tests/test_core_tables.py fails while the copy is stale or differs from
the metadata in any column, default, index or constraint.

Anything the renderer does not know (a Python-side callable default, a type outside
`sqlalchemy`'s namespace, another kind of constraint) is refused rather than guessed.
"""
from __future__ import annotations

import re

import sqlalchemy
from sqlalchemy import (Column, ColumnDefault, DefaultClause, Index, MetaData, PrimaryKeyConstraint, Table,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.sql.elements import False_, TextClause, True_

PREFIX = "kaccy_"
HEADER = '''"""The kaccy_ tables as SQLAlchemy Core tables, for the repositories (adapters/sql/storage.py).

GENERATED from adapters/sql/tables.py by scripts/render_core_tables.py (`make tables`); do not
edit. Importing this loads SQLAlchemy Core only: no ORM, SQLModel or pydantic.
"""
'''


def python_name(table: Table) -> str:
    if not table.name.startswith(PREFIX):
        raise ValueError(f"table {table.name} is not named {PREFIX}...")
    return table.name[len(PREFIX):]


def _type(column: Column) -> str:
    """The column's type as Core spells it (SQLModel's AutoString is a String on every
    database this library supports; it differs only on MySQL)."""
    type_ = column.type
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    name = type(type_).__name__
    if getattr(sqlalchemy, name, None) is not type(type_):
        raise ValueError(f"{column.table.name}.{column.name}: type {name} is not in sqlalchemy's namespace")
    return repr(type_)


def _server_default(column: Column) -> str:
    default = column.server_default
    if not isinstance(default, DefaultClause):
        raise ValueError(f"{column.table.name}.{column.name}: server default {default!r} not supported")
    arg = default.arg
    if isinstance(arg, str):
        return repr(arg)
    if isinstance(arg, TextClause):
        return f"text({arg.text!r})"
    if isinstance(arg, (False_, True_)):
        return "false()" if isinstance(arg, False_) else "true()"
    raise ValueError(f"{column.table.name}.{column.name}: server default {arg!r} not supported")


def _column(column: Column) -> str:
    parts = [repr(column.name), _type(column)]
    if column.primary_key:
        parts.append("primary_key=True")
    parts.append(f"nullable={column.nullable}")
    if column.default is not None:
        if not isinstance(column.default, ColumnDefault) or not column.default.is_scalar:
            raise ValueError(f"{column.table.name}.{column.name}: only scalar defaults are supported")
        parts.append(f"default={column.default.arg!r}")
    if column.server_default is not None:
        parts.append(f"server_default={_server_default(column)}")
    if column.autoincrement != "auto":
        parts.append(f"autoincrement={column.autoincrement!r}")
    return f"Column({', '.join(parts)})"


def _constraints(table: Table) -> list[str]:
    """Indexes (those of `index=True` columns included) and constraints other than the
    primary key, which the columns' `primary_key=True` declare in column order."""
    rendered = []
    for index in sorted(table.indexes, key=lambda i: i.name or ""):
        if not index.name:
            raise ValueError(f"{table.name}: an index without a name")
        cols = ", ".join(repr(c.name) for c in index.columns)
        rendered.append(f"Index({index.name!r}, {cols}{', unique=True' if index.unique else ''})")
    for constraint in sorted(table.constraints, key=lambda c: str(c.name or "")):
        if isinstance(constraint, PrimaryKeyConstraint):
            if constraint.name:
                raise ValueError(f"{table.name}: a named primary key is not supported")
            continue
        if not isinstance(constraint, UniqueConstraint):
            raise ValueError(f"{table.name}: constraint {constraint!r} not supported")
        cols = ", ".join(repr(c.name) for c in constraint.columns)
        rendered.append(f"UniqueConstraint({cols}, name={constraint.name!r})")
    return rendered


def render(metadata: MetaData) -> str:
    """The source of core_tables.py for `metadata`."""
    used = {"Column", "MetaData", "Table"}
    body = []
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        lines = [_column(c) for c in table.columns] + _constraints(table)
        body.append(f"{python_name(table)} = Table(\n    {table.name!r}, metadata,\n"
                    + "".join(f"    {line},\n" for line in lines) + ")\n")
    text = "\n".join(body)
    used |= {n for n in re.findall(r"(?<![\w.'])(\w+)\(", text) if hasattr(sqlalchemy, n)}
    imports = "from sqlalchemy import (\n" + "".join(f"    {n},\n" for n in sorted(used)) + ")\n"
    return f"{HEADER}from __future__ import annotations\n\n{imports}\nmetadata = MetaData()\n\n\n" + "\n\n".join(body)
