from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy.engine import Engine

from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.adapters.sql.tables import metadata

pytest_plugins = ["tests.node_fixture"]

STORAGE_KINDS = ["memory", "sqlite"] + (["postgresql"] if os.environ.get("KACCY_TEST_DATABASE_URL") else [])


@pytest.fixture(params=STORAGE_KINDS)
def uow_factory(request: pytest.FixtureRequest, tmp_path):  # noqa: ANN001, ANN201
    """A unit-of-work factory over a fresh, empty store of each kind."""
    if request.param == "memory":
        yield MemoryUnitOfWorkFactory()
        return
    engine = fresh_engine(request.param, tmp_path)
    yield SqlUnitOfWorkFactory(engine)
    engine.dispose()


def fresh_engine(kind: str, tmp_path) -> Engine:  # noqa: ANN001
    """An engine over an empty store: a new SQLite file, or the test PostgreSQL database emptied."""
    if kind == "sqlite":
        return make_engine(f"sqlite:///{tmp_path}/kaccy-{uuid.uuid4().hex}.db")
    engine = make_engine(os.environ["KACCY_TEST_DATABASE_URL"])
    metadata.drop_all(engine)
    metadata.create_all(engine)
    return engine
