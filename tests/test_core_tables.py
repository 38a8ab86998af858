"""adapters/sql/core_tables.py (what the repositories use) is generated from the SQLModel tables
(adapters/sql/tables.py, what Alembic and `create_all` use): it must be current, and equal to
them in every column, type, default, index and constraint."""
from __future__ import annotations

import pathlib

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, func
from sqlalchemy.dialects import postgresql, sqlite

from kaccy_bitcoin.adapters.sql import core_tables
from kaccy_bitcoin.adapters.sql.render_tables import render
from kaccy_bitcoin.adapters.sql.tables import metadata

GENERATED = pathlib.Path(core_tables.__file__)
DIALECTS = (sqlite.dialect(), postgresql.dialect())


def test_the_core_tables_are_current() -> None:
    assert GENERATED.read_text() == render(metadata), \
        "adapters/sql/core_tables.py is stale: run `make tables`"


def described(md: MetaData) -> dict:
    """Everything about the tables that the database or a Core statement sees."""
    def server_default(c: Column) -> str | None:
        if c.server_default is None:
            return None
        arg = c.server_default.arg
        return arg if isinstance(arg, str) else str(arg.compile(dialect=sqlite.dialect()))

    return {t.name: {
        "columns": [(c.name, [c.type.compile(dialect=d) for d in DIALECTS], type(getattr(c.type, "impl_instance", c.type)).__name__, c.primary_key,
                     c.nullable, c.default.arg if c.default is not None else None, server_default(c),
                     c.autoincrement) for c in t.columns],
        "primary_key": [c.name for c in t.primary_key.columns],
        "indexes": sorted((i.name, [c.name for c in i.columns], bool(i.unique)) for i in t.indexes),
        "constraints": sorted((type(k).__name__, str(k.name), [c.name for c in k.columns])
                              for k in t.constraints),
    } for t in md.tables.values()}


def test_the_core_tables_equal_the_sqlmodel_tables() -> None:
    assert described(core_tables.metadata) == described(metadata)
    assert set(core_tables.metadata.tables) == set(metadata.tables)


def test_the_comparison_sees_a_difference() -> None:
    def one(**kw: object) -> MetaData:
        md = MetaData()
        Table("kaccy_x", md, Column("a", String(20), primary_key=True),
              Column("b", Integer(), nullable=False, **kw))
        return md

    assert described(one()) == described(one())
    assert described(one()) != described(one(default=0))
    assert described(one()) != described(one(server_default="0"))
    assert described(one()) != described(one(index=True))


def test_what_the_renderer_cannot_say_is_refused() -> None:
    md = MetaData()
    Table("kaccy_x", md, Column("a", Integer(), primary_key=True), Column("b", Boolean(), default=lambda: True))
    with pytest.raises(ValueError, match="scalar defaults"):
        render(md)
    md = MetaData()
    Table("kaccy_y", md, Column("a", Integer(), primary_key=True, server_default=func.now()))
    with pytest.raises(ValueError, match="server default"):
        render(md)
