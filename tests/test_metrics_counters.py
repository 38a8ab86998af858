"""`/metrics`'s database figures are counters kept as rows change (triggers, in the changing
transaction), so a scrape costs the same at 10 rows as at 1,000, and its values are what
aggregating the tables would give, whichever path wrote the rows (insert, upsert, update,
delete) and on a database upgraded from before the counters."""
from __future__ import annotations

import datetime as dt
import os
import random

import pytest
from alembic import command
from sqlalchemy import delete, event, func, insert, select, update

from kaccy_bitcoin.adapters.sql import core_tables as t
from kaccy_bitcoin.adapters.sql import migrations
from kaccy_bitcoin.adapters.sql.schema import HEAD
from kaccy_bitcoin.adapters.sql.service_store import SqlServiceStore
from kaccy_bitcoin.adapters.sql.storage import make_engine
from tests.conftest import STORAGE_KINDS, empty_kaccy_tables, fresh_engine

SQL_KINDS = [k for k in STORAGE_KINDS if k != "memory"]
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
PAYMENT_STATES = ("PENDING", "UNCONFIRMED", "CONFIRMED", "FINALIZED", "EXPIRED")
WITHDRAWAL_STATES = ("HELD", "APPROVED", "SIGNED", "BROADCAST", "CONFIRMED")


def aggregated(engine) -> dict:  # noqa: ANN001
    """The figures as a whole-table aggregation gives them (what the scrape used to run)."""
    p, o, w = t.payments, t.received_outputs, t.withdrawals
    with engine.connect() as c:
        payments = dict(c.execute(select(p.c.state, func.count()).group_by(p.c.state)).all())
        received = c.execute(select(func.coalesce(func.sum(o.c.amount_sat), 0))
                             .where(o.c.status == "active", o.c.confirmations > 0)).scalar_one()
        withdrawals = dict(c.execute(select(w.c.state, func.count()).group_by(w.c.state)).all())
        last_seq = c.execute(select(func.coalesce(func.max(t.audit_log.c.seq), 0))).scalar_one()
    return {"payments": {k.lower(): v for k, v in payments.items()}, "received_sat": int(received),
            "withdrawals": {k.lower(): v for k, v in withdrawals.items()}, "last_seq": int(last_seq)}


def nonzero(stats: dict) -> dict:
    return {**stats, "payments": {k: v for k, v in stats["payments"].items() if v},
            "withdrawals": {k: v for k, v in stats["withdrawals"].items() if v}}


def add_rows(engine, start: int, count: int) -> None:  # noqa: ANN001
    """Orders' payments, each with a received output, and withdrawals, in assorted states."""
    rnd = random.Random(start)
    with engine.begin() as c:
        c.execute(insert(t.payments), [
            {"order_id": f"o-{n}", "state": rnd.choice(PAYMENT_STATES), "history": [], "event_seq": 0,
             "finality_alerted": False, "paid_reported": False, "version": 1} for n in range(start, start + count)])
        c.execute(insert(t.received_outputs), [
            {"txid": f"{n:064x}", "vout": 0, "order_id": f"o-{n}", "amount_sat": 1000 + n,
             "confirmations": rnd.choice((0, 1, 6)), "first_seen": NOW, "block_hash": None,
             "status": rnd.choice(("active", "active", "replaced")), "replaced_by": None}
            for n in range(start, start + count)])
        c.execute(insert(t.withdrawals), [
            {"withdrawal_id": f"w-{n}", "state": rnd.choice(WITHDRAWAL_STATES), "created_at": NOW, "psbt": "",
             "data": {}, "txid": None, "settled": False, "version": 1} for n in range(start, start + count)])


def upsert(engine, order_id: str, state: str) -> None:  # noqa: ANN001
    """INSERT ... ON CONFLICT DO UPDATE, as the repositories write a payment."""
    with engine.begin() as c:
        if c.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        row = {"order_id": order_id, "state": state, "history": [], "event_seq": 0, "finality_alerted": False,
               "paid_reported": False, "version": 1}
        stmt = dialect_insert(t.payments).values(row)
        c.execute(stmt.on_conflict_do_update(index_elements=["order_id"], set_={"state": stmt.excluded.state}))


@pytest.fixture(params=SQL_KINDS)
def engine(request, tmp_path):  # noqa: ANN001, ANN201
    engine = fresh_engine(request.param, tmp_path)
    yield engine
    engine.dispose()


def test_the_counters_follow_every_kind_of_write(engine) -> None:  # noqa: ANN001
    store = SqlServiceStore(engine)
    assert store.stats() == {"payments": {}, "received_sat": 0, "withdrawals": {}, "last_seq": 0}
    add_rows(engine, 0, 40)
    assert nonzero(store.stats()) == aggregated(engine)
    with engine.begin() as c:
        c.execute(update(t.payments).where(t.payments.c.state == "PENDING").values(state="UNCONFIRMED"))
        c.execute(update(t.received_outputs).where(t.received_outputs.c.confirmations == 0).values(confirmations=1))
        c.execute(update(t.received_outputs).where(t.received_outputs.c.vout == 0, t.received_outputs.c.amount_sat < 1010)
                  .values(status="replaced"))
        c.execute(update(t.withdrawals).values(version=t.withdrawals.c.version + 1))   # no counted change
        c.execute(delete(t.payments).where(t.payments.c.order_id.in_(["o-1", "o-2", "o-3"])))
        c.execute(delete(t.received_outputs).where(t.received_outputs.c.order_id == "o-30"))
        c.execute(delete(t.withdrawals).where(t.withdrawals.c.withdrawal_id == "w-7"))
    upsert(engine, "o-5", "EXPIRED")       # an existing row: the update path
    upsert(engine, "o-new", "PENDING")     # a new one: the insert path
    assert nonzero(store.stats()) == aggregated(engine)
    with engine.begin() as c:              # a rolled-back change moves no counter
        c.execute(update(t.payments).values(state="FINALIZED"))
        c.rollback()
    assert nonzero(store.stats()) == aggregated(engine)


def test_a_scrape_costs_the_same_at_10_and_at_1000_rows(engine) -> None:  # noqa: ANN001
    statements: list[str] = []
    steps = [0]

    def counted(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(statement)

    def on_connect(dbapi_connection, record) -> None:  # noqa: ANN001
        if hasattr(dbapi_connection, "set_progress_handler"):   # SQLite: count its VM's steps
            dbapi_connection.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 1)

    engine.dispose()
    event.listen(engine, "connect", on_connect)
    store = SqlServiceStore(engine)

    def scrape() -> tuple[int, int, dict]:
        store.stats()                      # a warm connection, as a running service has
        event.listen(engine, "before_cursor_execute", counted)
        statements.clear()
        steps[0] = 0
        try:
            stats = store.stats()
        finally:
            event.remove(engine, "before_cursor_execute", counted)
        return len(statements), steps[0], stats

    add_rows(engine, 0, 10)
    few_statements, few_steps, few = scrape()
    add_rows(engine, 10, 990)
    many_statements, many_steps, many = scrape()
    assert few_statements == many_statements <= 3, statements   # SQLite: BEGIN (deferred: no write lock)
    assert not any("IMMEDIATE" in s for s in statements), statements
    assert nonzero(few) != nonzero(many) and nonzero(many) == aggregated(engine)
    if engine.dialect.name == "sqlite":
        # Reading the counters is a few hundred VM steps whatever the tables hold; aggregating
        # 1,000 rows of three tables is tens of thousands.
        assert many_steps <= few_steps + 200, (few_steps, many_steps)


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_an_upgraded_database_starts_with_counters_equal_to_its_tables(kind, tmp_path) -> None:  # noqa: ANN001
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/upgrade.db"
    else:
        url = os.environ["KACCY_TEST_DATABASE_URL"]
        empty_kaccy_tables(make_engine(url, check_schema=False))
    engine = make_engine(url, check_schema=False)
    migrations.upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(migrations.config(conn), "0008")
    add_rows(engine, 0, 25)              # written by a release before the counters
    with engine.connect() as conn:
        assert "kaccy_metric_counters" not in {r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table'" if kind == "sqlite"
            else "SELECT tablename FROM pg_tables").all()}
    assert migrations.upgrade(engine) == ("0008", HEAD)   # through 0009, the counters, to the last one
    store = SqlServiceStore(engine)
    assert nonzero(store.stats()) == aggregated(engine) and store.stats()["received_sat"] > 0
    add_rows(engine, 25, 5)
    assert nonzero(store.stats()) == aggregated(engine)
    engine.dispose()


def scraped(text: str) -> dict:
    """The database figures of a /metrics answer, shaped as `stats()` gives them."""
    import re

    found: dict = {"payments": {}, "withdrawals": {}, "received_sat": None, "last_seq": None}
    for name, label, value in re.findall(r'^(kaccy_\w+?)(?:\{\w+="(\w+)"\})? ([0-9.e+]+)$', text, re.M):
        if name == "kaccy_payments":
            found["payments"][label] = int(float(value))
        elif name == "kaccy_withdrawals":
            found["withdrawals"][label] = int(float(value))
        elif name == "kaccy_received_sat":
            found["received_sat"] = int(float(value))
        elif name == "kaccy_outbox_last_seq":
            found["last_seq"] = int(float(value))
    return found


@pytest.mark.node
async def test_served_metrics_agree_with_the_tables_as_orders_are_made_and_paid(node, tmp_path) -> None:  # noqa: ANN001
    import aiohttp

    from tests.payments_harness import Shop
    from tests.service_harness import Client, Service, api_key, service_env, until

    shop = Shop(node, tmp_path)
    env = service_env(shop.env)
    orders_key = api_key(env, "orders")
    service = Service(env, tmp_path / "serve.log")
    engine = make_engine(shop.env["KACCY_DATABASE_URL"])
    try:
        async with aiohttp.ClientSession() as session:
            orders, anonymous = Client(session, service.url, orders_key), Client(session, service.url, None)
            made = []
            for n in range(4):
                status, order = await orders.post("/v1/orders", {"order_id": f"mc-{n}", "amount_sat": 30_000 + n})
                assert status == 201, order
                made.append(order)
            status, text = await anonymous.get("/metrics")
            assert scraped(text)["payments"] == {"pending": 4}
            await node.send(made[0]["address"], made[0]["amount_sat"])
            await node.mine(1)

            async def settled() -> dict | None:
                status, text = await anonymous.get("/metrics")
                figures = scraped(text)
                return figures if figures["received_sat"] == made[0]["amount_sat"] else None

            figures = await until(settled, 60)
            assert figures["payments"]["pending"] == 3 and sum(figures["payments"].values()) == 4
            assert nonzero(figures) == aggregated(engine)
    finally:
        service.stop()
        engine.dispose()
