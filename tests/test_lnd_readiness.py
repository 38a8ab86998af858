"""`/ready` of `kaccy-bitcoin serve` asks LND's GetInfo: ready only when the node answers and says
it is synced to the chain; otherwise the `lnd` check says why. Against the fake LND as its own
process over HTTPS."""
from __future__ import annotations

import aiohttp
import pytest

from tests.payments_harness import Shop
from tests.service_harness import Client, Service, service_env, until

pytestmark = pytest.mark.node


async def test_ready_needs_lnd_synced_to_chain(node, fake, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    env = service_env(shop.env, KACCY_LND_REST_URL=fake.rest_url, KACCY_LND_MACAROON=fake.info["macaroon"],
                      KACCY_LND_TLS_CERT=fake.info["tls_cert"])
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            anonymous = Client(session, service.url, None)

            async def ready_with(status: int, lnd_status: str) -> dict | None:
                code, report = await anonymous.get("/ready")
                lnd = report["checks"].get("lnd", {})
                return report if code == status and lnd.get("status") == lnd_status else None

            report = await until(lambda: ready_with(200, "ok"))
            lnd = report["checks"]["lnd"]
            assert lnd["synced_to_chain"] is True and lnd["block_height"] >= 0 and lnd["active_channels"] == 1

            status, _ = await fake.control("chain", {"synced_to_chain": False, "block_height": 500})
            assert status == 200
            report = await until(lambda: ready_with(503, "fail"))
            lnd = report["checks"]["lnd"]
            assert lnd["synced_to_chain"] is False and lnd["block_height"] == 500
            assert "not synced" in lnd["error"], lnd
            assert all(c["status"] == "ok" for name, c in report["checks"].items() if name != "lnd"), report

            status, _ = await fake.control("chain", {"synced_to_chain": True})
            assert status == 200
            await until(lambda: ready_with(200, "ok"))

            fake.stop()   # LND gone: not ready, and the check names the cause
            report = await until(lambda: ready_with(503, "fail"))
            assert report["checks"]["lnd"]["error"].startswith("lnd_"), report["checks"]["lnd"]
    finally:
        service.stop()
