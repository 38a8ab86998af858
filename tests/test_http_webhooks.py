"""Webhooks: signed deliveries of every committed event, retried with backoff kept in the
database, so a receiver that is down while the service restarts still gets every event."""
from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from kaccy_bitcoin.domain.api_access import verify_signature
from tests.conftest import STORAGE_KINDS, fresh_engine
from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env, until

pytestmark = pytest.mark.node
SQL_KINDS = [k for k in STORAGE_KINDS if k != "memory"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook receiver: checks each signature, answers 500 to its first request, then 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.secret = ""
        self.received: list[dict] = []
        self.refused = 0
        self.bad_signatures = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(self.secret, body, request.headers.get("Kaccy-Signature", ""), int(time.time())):
            self.bad_signatures += 1
            return web.Response(status=400)
        if self.refused == 0:
            self.refused += 1
            return web.Response(status=500)
        self.received.append(await request.json())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_a_receiver_down_across_a_restart_gets_every_event(node, tmp_path, kind) -> None:  # noqa: ANN001
    settings = {}
    if kind == "postgresql":
        import os

        fresh_engine(kind, tmp_path).dispose()
        settings["KACCY_DATABASE_URL"] = os.environ["KACCY_TEST_DATABASE_URL"]
    shop = Shop(node, tmp_path, **settings)
    # The receiver runs on 127.0.0.1: private addresses allowed.
    env = service_env(shop.env, KACCY_WEBHOOK_RETRY_FIRST="0.2", KACCY_WEBHOOK_RETRY_MAX="1",
                      KACCY_WEBHOOK_ALLOW_PRIVATE="true")
    admin_key, read_key = api_key(env, "admin"), api_key(env, "read")
    receiver = Receiver(free_port())
    service = Service(env, tmp_path / "serve-1.log")
    try:
        async with aiohttp.ClientSession() as session:
            admin = Client(session, service.url, admin_key)
            s, hook = await admin.post("/v1/webhooks", {"url": f"http://127.0.0.1:{receiver.port}/hook"})
            assert s == 201 and hook["webhook_id"].startswith("wh_") and hook["secret"]
            receiver.secret = hook["secret"]
            s, only = await admin.post("/v1/webhooks", {"url": f"http://127.0.0.1:{receiver.port}/other",
                                                        "events": ["order_paid"]})
            assert s == 201 and only["events"] == ["order_paid"]
            s, e = await admin.post("/v1/webhooks", {"url": "ftp://x", "events": ["nope"]})
            assert s == 400 and e["error"]["code"] == "invalid_webhook"
            s, e = await admin.post("/v1/webhooks", {"url": "http://x/", "events": ["no_such_kind"]})
            assert s == 400 and "no_such_kind" in e["error"]["message"]
            s, listed = await admin.get("/v1/webhooks")
            assert {w["webhook_id"] for w in listed["webhooks"]} == {hook["webhook_id"], only["webhook_id"]}
            s, gone = await admin.request("DELETE", f"/v1/webhooks/{only['webhook_id']}")
            assert s == 200 and gone["active"] is False

            for n in range(3):
                address = shop.order(f"wh-{n}", 10_000 + n)["address"]
                await node.send(address, 10_000 + n)

            async def failing() -> dict | None:
                status, state = await admin.get(f"/v1/webhooks/{hook['webhook_id']}")
                return state if state["attempts"] >= 2 and state["last_error"] else None

            state = await until(failing)
            assert state["delivered_seq"] == 0
        assert service.stop() == 0
        await node.mine(1)           # more events while the service is down

        await receiver.start()
        service = Service(env, tmp_path / "serve-2.log")
        async with aiohttp.ClientSession() as session:
            reader = Client(session, service.url, read_key)
            admin = Client(session, service.url, admin_key)

            async def everything() -> list | None:
                status, page = await reader.get("/v1/events?limit=1000")
                seqs = [e["seq"] for e in page["events"]]
                got = sorted({d["seq"] for d in receiver.received})
                confirmed = sum(e["kind"] == "payment_confirmed" for e in page["events"]) == 3
                return page["events"] if confirmed and got == seqs else None

            events = await until(everything, 60)
            assert receiver.refused == 1 and receiver.bad_signatures == 0
            by_seq = {d["seq"]: d for d in receiver.received}
            for event in events:
                delivered = dict(by_seq[event["seq"]])
                assert delivered.pop("delivery_id") == f"{hook['webhook_id']}:{event['seq']}"
                assert delivered == event
            s, state = await admin.get(f"/v1/webhooks/{hook['webhook_id']}")
            assert state["delivered_seq"] == events[-1]["seq"] and state["attempts"] == 0

            count = len(receiver.received)
            s, rewound = await admin.post(f"/v1/webhooks/{hook['webhook_id']}/redeliver", {"from_seq": 2})
            assert s == 200 and rewound["delivered_seq"] == 1
            await until(lambda: asyncio.sleep(0, len(receiver.received) >= count + len(events) - 1))
            again = receiver.received[count:]
            assert [d["seq"] for d in again] == [e["seq"] for e in events[1:]]
            assert again[0]["delivery_id"] == f"{hook['webhook_id']}:2"
            s, e = await admin.post(f"/v1/webhooks/{hook['webhook_id']}/redeliver", {"from_seq": 10**9})
            assert s == 400 and e["error"]["code"] == "invalid_webhook"
            s, e = await admin.post("/v1/webhooks/wh_nope/redeliver", {"from_seq": 1})
            assert s == 404
            s, text = await admin.get("/metrics")
            assert 'kaccy_webhook_deliveries_total{result="delivered"}' in text
    finally:
        service.stop()
        await receiver.stop()


def commit_events(shop: Shop, count: int, prefix: str) -> None:
    """Events straight into the outbox (what a monitor or a use case commits), from this process."""
    import datetime as dt
    import uuid

    from kaccy_bitcoin.domain.events import DomainEvent

    factory = shop.container().storage.uow()
    now = dt.datetime.now(dt.timezone.utc)
    with factory() as uow:
        uow.record([DomainEvent(f"{prefix}-{n}:{uuid.uuid4().hex}", "payment_detected", f"{prefix}-{n}", now)
                    for n in range(count)])
        uow.commit()
    factory.engine.dispose()


INSIDE_URLS = ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://10.0.0.1/hook", "http://[::1]/hook",
               "http://169.254.169.254/latest/meta-data", "http://100.64.0.1/hook", "http://[::ffff:10.0.0.1]/hook",
               "http://0.0.0.0:8080/hook", "http://224.0.0.1/hook", "http://[fe80::1]/hook", "http://192.168.0.1/"]


async def test_webhooks_aimed_inside_are_refused_then_checked_again_at_delivery(node, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    env = service_env(shop.env, KACCY_WEBHOOK_RETRY_FIRST="0.2", KACCY_WEBHOOK_RETRY_MAX="1")
    admin_key = api_key(env, "admin")
    receiver = Receiver(free_port())
    receiver.refused = 1
    await receiver.start()
    url = f"http://127.0.0.1:{receiver.port}/hook"
    # Registering needs private addresses allowed; no deliveries from this instance.
    allowing = Service({**env, "KACCY_WEBHOOK_ALLOW_PRIVATE": "true"}, tmp_path / "serve-allow.log",
                       "--no-monitor", "--no-webhooks")
    try:
        async with aiohttp.ClientSession() as session:
            s, hook = await Client(session, allowing.url, admin_key).post("/v1/webhooks", {"url": url})
            assert s == 201, hook
            receiver.secret = hook["secret"]
        assert allowing.stop() == 0
        commit_events(shop, 2, "inside")

        service = Service(env, tmp_path / "serve.log", "--no-monitor")   # private addresses not allowed
        try:
            async with aiohttp.ClientSession() as session:
                admin = Client(session, service.url, admin_key)
                for inside in INSIDE_URLS:
                    s, e = await admin.post("/v1/webhooks", {"url": inside})
                    assert s == 400 and e["error"]["code"] == "invalid_webhook_url", (inside, e)
                    assert "KACCY_WEBHOOK_ALLOW_PRIVATE" in e["error"]["message"]
                s, listed = await admin.get("/v1/webhooks")
                assert [w["webhook_id"] for w in listed["webhooks"]] == [hook["webhook_id"]]

                async def refused() -> dict | None:   # the one registered before: refused when delivering
                    s, state = await admin.get(f"/v1/webhooks/{hook['webhook_id']}")
                    return state if state["attempts"] >= 2 else None

                state = await until(refused)
                assert state["delivered_seq"] == 0 and state["last_error"].startswith("refused: "), state
                assert "loopback" in state["last_error"]
            assert receiver.received == [] and receiver.refused == 1   # never reached
        finally:
            service.stop()
    finally:
        allowing.stop()
        await receiver.stop()


class SlowReceiver(Receiver):
    """Takes its time over each delivery, so two deliverers would both send the same event."""

    async def handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return await super().handle(request)


async def test_no_monitor_instances_deliver_only_as_the_leader(node, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    env = service_env(shop.env, KACCY_WEBHOOK_RETRY_FIRST="0.2", KACCY_WEBHOOK_RETRY_MAX="1",
                      KACCY_WEBHOOK_ALLOW_PRIVATE="true")
    admin_key = api_key(env, "admin")
    receiver = SlowReceiver(free_port())
    receiver.refused = 1
    await receiver.start()
    services = [Service(env, tmp_path / f"serve-{n}.log", "--no-monitor") for n in range(2)]

    def leaders() -> list[Service]:
        return [s for s in services if any(line.get("webhooks") == "leader" for line in s.logs())]

    try:
        async with aiohttp.ClientSession() as session:
            s, hook = await Client(session, services[0].url, admin_key).post(
                "/v1/webhooks", {"url": f"http://127.0.0.1:{receiver.port}/hook"})
            assert s == 201
            receiver.secret = hook["secret"]
            commit_events(shop, 6, "first")
            await until(lambda: asyncio.sleep(0, len(receiver.received) >= 6))
            await asyncio.sleep(1.0)          # time for a second deliverer to show itself
            ids = [d["delivery_id"] for d in receiver.received]
            assert len(ids) == len(set(ids)) == 6, ids
            (leader,) = leaders()
            # The leader dies: the other instance takes over and delivers what follows.
            leader.stop(signal.SIGKILL)
            services.remove(leader)
            commit_events(shop, 3, "second")
            await until(lambda: asyncio.sleep(0, len(receiver.received) >= 9), timeout=30)
            assert leaders() == services
            ids = [d["delivery_id"] for d in receiver.received]
            assert len(set(ids)) == 9 and receiver.bad_signatures == 0
    finally:
        for service in services:
            service.stop()
        await receiver.stop()
