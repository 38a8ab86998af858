"""The service store's idempotency keys on each SQL database, seen from two engines (two
processes' connection pools): the first claim wins, a retry gets the recorded answer, another
body is told apart, a released key is free again, and of two racing claims exactly one wins.
On PostgreSQL each of these writes is one statement in autocommit (SqlServiceStore._write_one)."""
from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest

from kaccy_bitcoin.adapters.sql.service_store import SqlServiceStore
from tests.conftest import STORAGE_KINDS, fresh_engine
from kaccy_bitcoin.adapters.sql.storage import make_engine

SQL_KINDS = [k for k in STORAGE_KINDS if k != "memory"]
NOW = dt.datetime(2026, 12, 7, 23, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(params=SQL_KINDS)
def two_stores(request: pytest.FixtureRequest, tmp_path):  # noqa: ANN001, ANN201
    first = fresh_engine(request.param, tmp_path)
    second = make_engine(first.url.render_as_string(hide_password=False))   # another pool, as another process
    yield SqlServiceStore(first), SqlServiceStore(second)
    first.dispose()
    second.dispose()


def test_a_key_is_claimed_once_and_replays_its_answer(two_stores) -> None:  # noqa: ANN001
    a, b = two_stores
    assert a.claim_idempotency("k1", "idem-1", "hash-1", NOW) is None
    running = b.claim_idempotency("k1", "idem-1", "hash-1", NOW)
    assert running is not None and running.status is None and running.request_hash == "hash-1"
    a.finish_idempotency("k1", "idem-1", 201, {"order_id": "o1"})
    replay = b.claim_idempotency("k1", "idem-1", "hash-1", NOW)
    assert (replay.request_hash, replay.status, replay.response) == ("hash-1", 201, {"order_id": "o1"})
    other = b.claim_idempotency("k1", "idem-1", "hash-2", NOW)   # another body: the caller refuses it
    assert other.request_hash == "hash-1"
    assert b.claim_idempotency("k2", "idem-1", "hash-2", NOW) is None   # keys are per API key


def test_a_released_key_is_free_again_and_a_finished_one_is_not_released(two_stores) -> None:  # noqa: ANN001
    a, b = two_stores
    assert a.claim_idempotency("k1", "idem-2", "h", NOW) is None
    a.release_idempotency("k1", "idem-2")
    assert b.claim_idempotency("k1", "idem-2", "h", NOW) is None
    b.finish_idempotency("k1", "idem-2", 422, {"error": {"code": "x"}})
    a.release_idempotency("k1", "idem-2")   # only an unanswered claim is released
    assert a.claim_idempotency("k1", "idem-2", "h", NOW).status == 422


def test_of_racing_claims_exactly_one_wins(two_stores) -> None:  # noqa: ANN001
    stores = list(two_stores) * 4
    for _ in range(5):
        idem = uuid.uuid4().hex
        results: list = []
        start = threading.Barrier(len(stores))

        def claim(store: SqlServiceStore) -> None:
            start.wait()
            results.append(store.claim_idempotency("k1", idem, "h", NOW))

        threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == len(stores)
        assert sum(r is None for r in results) == 1
        assert all(r.status is None and r.request_hash == "h" for r in results if r is not None)


def test_a_receipt_claims_and_answers_within_the_units_of_work_it_is_given(two_stores) -> None:  # noqa: ANN001
    """The claim and the answer written by a use case's own transactions (the receipt) are the
    rows `claim_idempotency` and `finish_idempotency` write: they exist exactly when the unit of
    work commits, and a key with a record is refused without writing anything."""
    import asyncio

    from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory
    from kaccy_bitcoin.ports.service_store import IdempotencyKeyTaken

    a, b = two_stores
    uows = SqlUnitOfWorkFactory(a._engine)

    async def scenario() -> None:
        rolled_back = a.receipt("k1", "idem-r0", "h0", NOW, 201)
        async with uows() as uow:
            rolled_back.claim(uow)   # and no commit
        assert not rolled_back.claimed and b.claim_idempotency("k1", "idem-r0", "h0", NOW) is None

        receipt = a.receipt("k1", "idem-r1", "h1", NOW, 201)
        async with uows() as uow:
            receipt.claim(uow)
            uow.commit()
        assert receipt.claimed and not receipt.answered
        running = b.claim_idempotency("k1", "idem-r1", "h1", NOW)
        assert running is not None and running.status is None
        async with uows() as uow:
            receipt.answer(uow, {"order_id": "o1"})
            uow.commit()
        assert receipt.answered
        replay = b.claim_idempotency("k1", "idem-r1", "h1", NOW)
        assert (replay.status, replay.response) == (201, {"order_id": "o1"})

        again = a.receipt("k1", "idem-r1", "h1", NOW, 201)
        with pytest.raises(IdempotencyKeyTaken):
            async with uows() as uow:
                again.claim(uow)
                uow.commit()
        assert not again.claimed

    asyncio.run(scenario())
