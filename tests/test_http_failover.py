"""Two `kaccy-bitcoin serve` instances on one database: both answer the API, exactly one (the
leadership lock's holder) runs the monitors and the webhook deliveries; the leader is killed
(-9) while payments arrive, the other takes over within a poll interval, every payment is
processed once and every event reaches the webhook receiver (by delivery id: a delivery the dead
leader had sent but not yet recorded may come again, with the same id, for the receiver to drop)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest

from tests.conftest import fresh_engine
from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env, until
from tests.test_http_webhooks import Receiver, free_port

SQL_KINDS = ["sqlite"] + (["postgresql"] if os.environ.get("KACCY_TEST_DATABASE_URL") else [])


def leads(service: Service) -> bool:
    return any(line.get("message") == "monitor leader" for line in service.logs())


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_two_instances_the_leader_killed_mid_stream(node, tmp_path, kind) -> None:  # noqa: ANN001
    settings = {}
    if kind == "postgresql":
        fresh_engine(kind, tmp_path).dispose()
        settings["KACCY_DATABASE_URL"] = os.environ["KACCY_TEST_DATABASE_URL"]
    shop = Shop(node, tmp_path, KACCY_CONFIRMATIONS="1,1,1", **settings)
    env = service_env(shop.env, KACCY_WEBHOOK_RETRY_FIRST="0.2", KACCY_WEBHOOK_RETRY_MAX="1",
                      KACCY_WEBHOOK_ALLOW_PRIVATE="true")   # the receiver is on 127.0.0.1
    admin_key = api_key(env, "admin")
    receiver = Receiver(free_port())
    receiver.refused = 1            # this receiver accepts from the first request
    await receiver.start()
    first = Service(env, tmp_path / "serve-1.log")
    second = None
    try:
        await until(lambda: asyncio.sleep(0, leads(first)), timeout=30)
        second = Service(env, tmp_path / "serve-2.log")
        async with aiohttp.ClientSession() as session:
            one, two = Client(session, first.url, admin_key), Client(session, second.url, admin_key)
            status, hook = await one.post("/v1/webhooks", {"url": f"http://127.0.0.1:{receiver.port}/hook"})
            assert status == 201
            receiver.secret = hook["secret"]
            orders = []
            for n in range(8):       # both instances serve the API
                client = one if n % 2 else two
                status, made = await client.post("/v1/orders", {"order_id": f"ha-{n}", "amount_sat": 20_000 + n})
                assert status == 201, made
                orders.append(made)
            assert not leads(second)
            for order in orders[:4]:
                await node.send(order["address"], order["amount_sat"])

            async def detected(n: int) -> bool:
                events = (await two.get("/v1/events?limit=1000"))[1]["events"]
                return sum(e["kind"] == "payment_detected" for e in events) >= n

            await until(lambda: detected(4), timeout=30)
            for order in orders[4:]:    # the leader dies while these arrive, maybe mid-poll or mid-delivery
                await node.send(order["address"], order["amount_sat"])
            first.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            first.proc.wait(10)
            await until(lambda: asyncio.sleep(0, leads(second)), timeout=15)
            assert time.monotonic() - killed <= 0.3 + 5     # within a poll interval (0.3 s) and start-up slack
            await node.mine(1)

            async def all_paid() -> list[dict] | None:
                events = (await two.get("/v1/events?limit=1000"))[1]["events"]
                paid = {e["subject"] for e in events if e["kind"] == "order_paid"}
                return events if paid >= {o["order_id"] for o in orders} else None

            events = await until(all_paid, timeout=60)

            async def delivered() -> bool:
                return {d["delivery_id"] for d in receiver.received} >= {
                    f"{hook['webhook_id']}:{e['seq']}" for e in events}

            await until(delivered, timeout=60)
    finally:
        for service in (first, second):
            if service is not None:
                service.stop()
        await receiver.stop()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    for order in orders:
        mine = [e["kind"] for e in events if e["subject"] == order["order_id"]]
        assert mine.count("payment_detected") == 1 and mine.count("order_paid") == 1, (order, mine)
    assert receiver.bad_signatures == 0
    by_id: dict[str, list[dict]] = {}
    for d in receiver.received:
        by_id.setdefault(d["delivery_id"], []).append(d)
    # A repeat is the same delivery (same id, same event): only what the killed leader had in flight.
    assert all(len({json.dumps(x, sort_keys=True) for x in same}) == 1 for same in by_id.values())
    assert len(receiver.received) - len(by_id) <= 2, {k: len(v) for k, v in by_id.items() if len(v) > 1}
