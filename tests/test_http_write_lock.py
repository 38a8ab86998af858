"""`kaccy-bitcoin serve` on SQLite while another process holds the database's write lock for
10 s: the event loop never waits for it. `/health` keeps answering at once (monitor, webhook
deliveries and writing API requests all running meanwhile), `/ready` reports the database busy
within seconds, and the writes that queued behind the lock complete once it is released, each
exactly once."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env, until
from tests.test_http_webhooks import free_port

pytestmark = pytest.mark.node

HOLD_SECONDS = 10
# Another process: takes SQLite's write lock (BEGIN IMMEDIATE), says so, holds it, lets go.
LOCKER = ("import sqlite3, sys, time\n"
          "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
          "c.execute('BEGIN IMMEDIATE')\n"
          "print('locked', flush=True)\n"
          "time.sleep(float(sys.argv[2]))\n"
          "c.execute('COMMIT')\n")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def test_health_answers_while_another_process_holds_the_write_lock(node, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    env = service_env(shop.env, KACCY_WEBHOOK_ALLOW_PRIVATE="true", KACCY_WEBHOOK_RETRY_FIRST="0.2",
                      KACCY_WEBHOOK_RETRY_MAX="0.5")
    keys = {"orders": api_key(env, "orders"), "admin": api_key(env, "admin")}
    service = Service(env, tmp_path / "serve.log")   # the monitor and the webhook deliveries run too
    locker = None
    try:
        async with aiohttp.ClientSession() as session:
            anonymous, orders = Client(session, service.url, None), Client(session, service.url, keys["orders"])
            admin = Client(session, service.url, keys["admin"])
            # A webhook whose receiver refuses: each delivery round fails and writes its retry.
            status, _ = await admin.post("/v1/webhooks", {"url": f"http://127.0.0.1:{free_port()}/hook"})
            assert status == 201
            status, _ = await orders.post("/v1/orders", {"order_id": "before", "amount_sat": 1000})
            assert status == 201
            await until(lambda: ready_status(anonymous, 200))

            database = tmp_path / "shop.db"
            locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(database), str(HOLD_SECONDS)],
                                      stdout=subprocess.PIPE, text=True)
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            locked_until = time.monotonic() + HOLD_SECONDS

            async def health_probe() -> list[float]:
                took = []
                while time.monotonic() < locked_until - 0.5:
                    started = time.perf_counter()
                    status, body = await anonymous.get("/health")
                    took.append(time.perf_counter() - started)
                    assert (status, body) == (200, {"status": "ok"})
                    await asyncio.sleep(0.05)   # about 20 requests a second
                return took

            async def create(n: int) -> tuple[int, dict]:
                await asyncio.sleep(0.5 * n)
                return await orders.post("/v1/orders", {"order_id": f"locked-{n}", "amount_sat": 2000 + n},
                                         headers={"Idempotency-Key": f"k-{n}"})

            async def ready() -> tuple[float, int, dict]:
                await asyncio.sleep(2)
                started = time.perf_counter()
                status, report = await anonymous.get("/ready")
                return time.perf_counter() - started, status, report

            probe = asyncio.ensure_future(health_probe())
            writes = [asyncio.ensure_future(create(n)) for n in range(4)]
            readiness = asyncio.ensure_future(ready())
            took = await probe
            ready_took, ready_status_code, report = await readiness
            assert locker.wait(30) == 0
            created = await asyncio.gather(*writes)

            assert len(took) >= 100, len(took)
            assert p99(took) < 0.050, f"/health p99 {p99(took) * 1000:.1f} ms, slowest {max(took) * 1000:.1f} ms"
            # The database check waits for the lock a bounded time, then says why it failed.
            assert ready_took < 5, ready_took
            assert ready_status_code == 503 and report["checks"]["database"]["status"] == "fail", report
            assert report["checks"]["database"]["error"].startswith("database_busy"), report
            # The writes waited for the lock, then completed: each order once.
            assert [status for status, _ in created] == [201] * 4, created
            for n, (_, made) in enumerate(created):
                again_status, again = await orders.post(
                    "/v1/orders", {"order_id": f"locked-{n}", "amount_sat": 2000 + n},
                    headers={"Idempotency-Key": f"k-{n}"})
                assert (again_status, again) == (201, made) and orders.last.headers["Idempotent-Replayed"] == "true"
            status, listed = await orders.get("/v1/orders?limit=100")
            assert status == 200
            ids = sorted(o["order_id"] for o in listed["orders"])
            assert ids == ["before", "locked-0", "locked-1", "locked-2", "locked-3"], ids
            await until(lambda: ready_status(anonymous, 200))
    finally:
        if locker is not None and locker.poll() is None:
            locker.kill()
        service.stop()


async def ready_status(client: Client, expected: int) -> bool:
    status, _ = await client.get("/ready")
    return status == expected
