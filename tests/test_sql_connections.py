"""Pooled PostgreSQL connections: checked with a round trip only after they sat idle, replaced
when the server dropped them meanwhile, and a connection lost while busy fails one unit of work
with a typed error, not the next ones."""
from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from kaccy_bitcoin.adapters.sql import engine as opening
from kaccy_bitcoin.adapters.sql.errors import DatabaseUnavailable
from kaccy_bitcoin.adapters.sql.storage import make_engine

URL = os.environ.get("KACCY_TEST_DATABASE_URL")
pytestmark = pytest.mark.skipif(not URL, reason="needs PostgreSQL (KACCY_TEST_DATABASE_URL)")


def backend_pid(engine) -> int:  # noqa: ANN001
    with engine.connect() as c:
        return c.execute(text("SELECT pg_backend_pid()")).scalar_one()


def terminate(pid: int) -> None:
    other = make_engine(URL, check_schema=False)
    with other.connect() as c:
        assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    other.dispose()




def test_an_idle_connection_the_server_dropped_is_replaced_before_use(monkeypatch) -> None:  # noqa: ANN001
    engine = make_engine(URL, check_schema=False)
    first = backend_pid(engine)
    terminate(first)
    monkeypatch.setattr(opening, "PING_AFTER_IDLE_SECONDS", 0.0)   # as if it sat idle for a while
    assert backend_pid(engine) != first          # checked, found dead, replaced: no error
    engine.dispose()


def test_a_busy_connection_is_not_checked_and_a_lost_one_fails_one_unit_of_work(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(opening, "PING_AFTER_IDLE_SECONDS", 3600.0)
    engine = make_engine(URL, check_schema=False)
    first = backend_pid(engine)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or real_ping(c))
    assert backend_pid(engine) == first and pings == []   # used a moment ago: no extra round trip
    terminate(first)
    with pytest.raises(DatabaseUnavailable, match="cannot connect to the database"):
        backend_pid(engine)
    assert backend_pid(engine) != first           # the pool replaced it
    engine.dispose()
