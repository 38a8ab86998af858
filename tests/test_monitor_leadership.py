"""Several `kaccy-bitcoin monitor` processes on one database: one leads (runs the monitors), the
others wait; when the leader is killed (-9) a standby takes over within a poll interval, and every
payment ends up in the outbox exactly once."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import attrs
import pytest

from kaccy_bitcoin import KaccyBitcoin
from kaccy_bitcoin.adapters.sql.leadership import FileLeadership, PostgresLeadership
from kaccy_bitcoin.adapters.sql.storage import make_engine
from kaccy_bitcoin.application.leadership import RunAsLeader
from kaccy_bitcoin.ports.leadership import Leadership
from tests.conftest import empty_kaccy_tables
from tests.payments_harness import Shop
from tests.test_zmq_wakeup import Monitor

PG_URL = os.environ.get("KACCY_TEST_DATABASE_URL")


def state(name: str):  # noqa: ANN201
    return lambda line: line.get("monitor") == name


async def eventually(check, timeout: float = 30, every: float = 0.3):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(every)


async def failover(node, shop: Shop, interval: float = 1.0) -> None:  # noqa: ANN001
    async with KaccyBitcoin.from_env({k: v for k, v in shop.env.items() if k.startswith("KACCY_")}) as kaccy:
        orders = [attrs.asdict(await kaccy.create_order(f"ha-{n}", 20_000 + n)) for n in range(8)]
    leader = await Monitor.start(shop, "--interval", str(interval))
    standby = None
    try:
        await leader.line(state("leader"))
        standby = await Monitor.start(shop, "--interval", str(interval))
        await standby.line(state("standby"))
        for order in orders[:4]:
            await node.send(order["address"], order["amount_sat"])
        for order in orders[:4]:
            await leader.line(lambda e, o=order: e.get("kind") == "payment_detected" and e["subject"] == o["order_id"])
        for order in orders[4:]:   # the leader dies while these arrive, maybe mid-poll
            await node.send(order["address"], order["amount_sat"])
        leader.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await leader.proc.wait()
        await standby.line(state("leader"), timeout=interval + 10)
        assert time.monotonic() - killed <= interval + 2
        await node.mine(1)

        def all_paid() -> bool:
            paid = {e["subject"] for e in shop.cli("events", "--limit", "1000")[1]["events"]
                    if e["kind"] == "order_paid"}
            return paid >= {o["order_id"] for o in orders}

        assert await eventually(all_paid), [shop.show(o["order_id"]) for o in orders]
    finally:
        for m in (leader, standby):
            if m is not None and m.proc.returncode is None:
                await m.stop()
    events = shop.cli("events", "--limit", "1000")[1]["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    for order in orders:
        mine = [e["kind"] for e in events if e["subject"] == order["order_id"]]
        assert mine.count("payment_detected") == 1 and mine.count("order_paid") == 1, (order, mine)


@pytest.mark.node
@pytest.mark.skipif(not PG_URL, reason="needs KACCY_TEST_DATABASE_URL (PostgreSQL)")
async def test_two_monitors_on_postgresql_one_leads_and_a_standby_takes_over(node, tmp_path) -> None:
    empty_kaccy_tables(make_engine(PG_URL, check_schema=False))
    shop = Shop(node, tmp_path, KACCY_DATABASE_URL=PG_URL)
    await failover(node, shop)


@pytest.mark.node
async def test_two_monitors_on_sqlite_share_a_file_lock(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    await failover(node, shop)
    assert (tmp_path / "shop.db.monitor.lock").exists()


@pytest.mark.skipif(not PG_URL, reason="needs KACCY_TEST_DATABASE_URL (PostgreSQL)")
async def test_postgres_advisory_lock_one_holder_released_with_its_connection() -> None:
    engine = make_engine(PG_URL, check_schema=False)
    first, second = PostgresLeadership(engine), PostgresLeadership(engine)
    try:
        assert await first.try_acquire() and await first.held()
        assert await first.try_acquire()          # already ours
        assert not await second.try_acquire() and not await second.held()
        first._conn.invalidate()                  # the connection dies: the server drops the lock
        assert not await first.held()
        assert await second.try_acquire()
        await second.release()
        assert await first.try_acquire()
    finally:
        await first.release()
        await second.release()
        engine.dispose()


async def test_file_lock_one_holder(tmp_path) -> None:
    first, second = FileLeadership(str(tmp_path / "x.lock")), FileLeadership(str(tmp_path / "x.lock"))
    assert await first.try_acquire() and not await second.try_acquire()
    await first.release()
    assert await second.try_acquire() and await second.held()
    await second.release()


class Flaky(Leadership):
    """Granted at once; lost after `lose_after` checks; granted again afterwards."""

    def __init__(self, lose_after: int) -> None:
        self.checks = 0
        self.lose_after = lose_after
        self.holding = False
        self.released = False

    @property
    def describe(self) -> str:
        return "flaky"

    async def try_acquire(self) -> bool:
        self.holding = True
        return True

    async def held(self) -> bool:
        self.checks += 1
        if self.checks == self.lose_after:
            self.holding = False
        return self.holding

    async def release(self) -> None:
        self.released = True


async def test_run_as_leader_stops_the_work_when_the_leadership_is_lost_and_leads_again() -> None:
    lead, changes, runs = Flaky(lose_after=2), [], []
    stop = asyncio.Event()

    async def work(until: asyncio.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) == 2:
            stop.set()
        await until.wait()

    await asyncio.wait_for(RunAsLeader(lead, retry=0.05)(work, stop, on_change=changes.append), 5)
    assert changes == ["leader", "lost", "leader"] and len(runs) == 2 and lead.released
