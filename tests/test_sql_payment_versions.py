"""The SQL payment repository's optimistic versions and its in-process cache.

Two factories on one database stand for two processes (each has its own cache).
"""
from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading

import pytest
from sqlalchemy import text

from kaccy_bitcoin.adapters.sql import migrations
from kaccy_bitcoin.adapters.sql.errors import DatabaseOutdated
from kaccy_bitcoin.adapters.sql.schema import HEAD
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import OutputObservation, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds, PaymentState
from tests.conftest import fresh_engine

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
KINDS = ["sqlite"] + (["postgresql"] if os.environ.get("KACCY_TEST_DATABASE_URL") else [])
REQUEST = PaymentRequest("o-1", "bcrt1qversioned", Satoshis(10_000), T0)
OUT = OutPoint(Txid("ab" * 32), 0)


@pytest.fixture(params=KINDS)
def engine(request: pytest.FixtureRequest, tmp_path):  # noqa: ANN001, ANN201
    engine = fresh_engine(request.param, tmp_path)
    yield engine
    engine.dispose()


def at_depth(payment: Payment, depth: int) -> Payment:
    payment.observe(REQUEST, OutputObservation(OUT, Satoshis(10_000), depth, "cd" * 32 if depth else None), T0)
    payment.settle(REQUEST, ConfirmationThresholds(), T0)
    return payment


def seed(factory: SqlUnitOfWorkFactory, depth: int = 1) -> None:
    with factory() as uow:
        uow.requests.add(REQUEST)
        uow.payments.save([at_depth(Payment("o-1"), depth)])
        uow.commit()


def depth_seen_by(factory: SqlUnitOfWorkFactory) -> int:
    with factory() as uow:
        return uow.payments.get("o-1").outputs[OUT].confirmations


def advance(factory: SqlUnitOfWorkFactory, depth: int) -> None:
    with factory() as uow:
        payment = uow.payments.get("o-1")
        uow.payments.save([at_depth(payment, depth)])
        uow.commit()


def test_a_write_by_another_process_is_read_again_not_served_from_the_cache(engine) -> None:
    first, second = SqlUnitOfWorkFactory(engine), SqlUnitOfWorkFactory(engine)
    seed(first, depth=1)
    assert depth_seen_by(first) == 1
    advance(second, 2)
    assert depth_seen_by(first) == 2          # the row's version moved on: read again
    advance(first, 3)
    assert depth_seen_by(second) == 3


def test_an_unchanged_row_is_served_from_the_cache(engine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    seed(factory, depth=1)
    with engine.begin() as conn:   # behind the repository's back, version untouched
        conn.execute(text("UPDATE kaccy_received_outputs SET confirmations = 99"))
    assert depth_seen_by(factory) == 1
    assert depth_seen_by(SqlUnitOfWorkFactory(engine)) == 99   # another process has no cache


def test_a_rolled_back_write_never_reaches_the_cache(engine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    seed(factory, depth=1)
    with factory() as uow:
        payment = uow.payments.get("o-1")
        uow.payments.save([at_depth(payment, 5)])
        assert uow.payments.get("o-1").outputs[OUT].confirmations == 5   # its own write
        # no commit
    assert depth_seen_by(factory) == 1


def test_a_rolled_back_insert_is_not_confused_with_a_later_one(engine) -> None:
    first, second = SqlUnitOfWorkFactory(engine), SqlUnitOfWorkFactory(engine)
    with first() as uow:
        uow.requests.add(REQUEST)
        uow.payments.save([Payment("o-1")])
        assert uow.payments.get("o-1").outputs == {}
    seed(second, depth=2)   # the same row id, at the same first version
    assert depth_seen_by(first) == 2


def test_two_writers_of_one_payment_the_second_is_refused(engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time (BEGIN IMMEDIATE), so this race cannot happen there")
    first, second = SqlUnitOfWorkFactory(engine), SqlUnitOfWorkFactory(engine)
    seed(first, depth=1)
    with first() as uow:
        payment = uow.payments.get("o-1")
        advance(second, 2)                      # commits while the first still holds its copy
        with pytest.raises(ConcurrentUpdate):
            uow.payments.save([at_depth(payment, 3)])
    assert depth_seen_by(first) == 2
    advance(first, 3)                           # a retry reads again and succeeds
    assert depth_seen_by(second) == 3


def test_racing_writers_in_threads_lose_no_update(engine) -> None:
    """Eight threads, each with its own factory, each moving the payment's depth up by one."""
    seed(SqlUnitOfWorkFactory(engine), depth=1)
    failures: list[BaseException] = []

    def bump() -> None:
        factory = SqlUnitOfWorkFactory(engine)
        for _ in range(50):
            try:
                with factory() as uow:
                    payment = uow.payments.get("o-1")
                    depth = payment.outputs[OUT].confirmations
                    uow.payments.save([at_depth(payment, depth + 1)])
                    uow.commit()
                    return
            except ConcurrentUpdate:
                continue
        failures.append(AssertionError("no attempt succeeded"))

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert depth_seen_by(SqlUnitOfWorkFactory(engine)) == 9
    with SqlUnitOfWorkFactory(engine)() as uow:
        assert uow.payments.get("o-1").state is PaymentState.FINALIZED


def test_a_database_from_before_versions_is_upgraded(tmp_path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE kaccy_payments (order_id VARCHAR(128) PRIMARY KEY, state VARCHAR(20) NOT NULL,"
                     " history JSON NOT NULL, event_seq INTEGER NOT NULL, reported_match JSON,"
                     " finality_alerted BOOLEAN NOT NULL)")
        conn.execute("INSERT INTO kaccy_payments VALUES ('old', 'PENDING', '[]', 0, NULL, 0)")
    with pytest.raises(DatabaseOutdated):   # refused until `kaccy-bitcoin db upgrade`
        make_engine(f"sqlite:///{path}")
    assert migrations.upgrade(make_engine(f"sqlite:///{path}", check_schema=False)) == (None, HEAD)
    factory = SqlUnitOfWorkFactory(make_engine(f"sqlite:///{path}"))
    with factory() as uow:
        old = uow.payments.get("old")
        assert old is not None and old.state is PaymentState.PENDING
        uow.payments.save([at_depth(Payment("o-1"), 1)])
        uow.commit()


def test_settled_payments_leave_the_cache(engine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    seed(factory, depth=6)   # finalized at once
    with engine.begin() as conn:   # behind the repository's back, version untouched
        conn.execute(text("UPDATE kaccy_received_outputs SET confirmations = 99"))
    assert depth_seen_by(factory) == 99   # not cached: read from the row
