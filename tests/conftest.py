from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.adapters.sql.schema import TABLE_PREFIX

pytest_plugins = ["tests.node_fixture"]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist every worker gets a PostgreSQL database of its own (`<db>_gw0`, ...),
    created on first use, so two workers never empty each other's kaccy_ tables or share an
    advisory lock (locks are per database)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    url = os.environ.get("KACCY_TEST_DATABASE_URL")
    if worker and url:
        os.environ["KACCY_TEST_DATABASE_URL"] = worker_database(url, worker)


def worker_database(url: str, worker: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
            if exists.first() is None:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)

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
    """An engine over an empty store at the latest schema revision, made by the first-use path
    users get: a new SQLite file, or the test PostgreSQL database emptied of kaccy_ tables
    (whatever revision they were at, the version table included) first."""
    if kind == "sqlite":
        return make_engine(f"sqlite:///{tmp_path}/kaccy-{uuid.uuid4().hex}.db")
    url = os.environ["KACCY_TEST_DATABASE_URL"]
    empty_kaccy_tables(make_engine(url, check_schema=False))
    return make_engine(url)


def empty_kaccy_tables(engine: Engine) -> None:
    """Drop every kaccy_ table (whatever revision made it), then dispose of the engine."""
    found = MetaData()
    found.reflect(engine, only=lambda name, _: name.startswith(TABLE_PREFIX))
    found.drop_all(engine)
    engine.dispose()


@pytest.fixture
def fake(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A fake LND of its own (kaccy-bitcoin-fake-lnd as a separate process, over HTTPS) for one test."""
    from tests.fake_lnd import FakeLndProcess

    process = FakeLndProcess(tmp_path_factory.mktemp("fake-lnd"))
    process.start()
    yield process
    process.stop()
