"""Orders paid over Lightning through the HTTP API: `serve` beside the fake LND (its own
process, over HTTPS), the invoice created with the order, settled by a remote payer, and the
order finalized by the service's own monitor."""
from __future__ import annotations

import aiohttp

from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env, until


async def test_an_order_with_an_invoice_paid_over_lightning(node, tmp_path, fake) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path, KACCY_LND_REST_URL=fake.rest_url, KACCY_LND_MACAROON=fake.info["macaroon"],
                KACCY_LND_TLS_CERT=fake.info["tls_cert"])
    env = service_env(shop.env)
    key = api_key(env, "orders")
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, service.url, key)
            status, made = await client.post("/v1/orders", {"order_id": "h-1", "amount_sat": 30_000,
                                                            "lightning_msat": 30_000_000},
                                             headers={"Idempotency-Key": "h-1-create"})
            assert status == 201 and made["order_id"] == "h-1" and made["address"]
            assert set(made["lightning"]) == {"payment_request", "payment_hash", "state"}
            assert made["lightning"]["state"] == "open"
            status, again = await client.post("/v1/orders/h-1/invoice", {"amount_msat": 30_000_000})
            assert status == 201 and again["payment_hash"] == made["lightning"]["payment_hash"]
            status, refused = await client.post("/v1/orders/h-1/invoice", {"amount_msat": 1_000})
            assert status == 409 or status == 422 or status == 400, refused
            assert refused["error"]["code"] == "invoice_conflict"

            await fake.pay(made["lightning"]["payment_request"])

            async def finalized() -> dict | None:
                status, view = await client.get("/v1/orders/h-1")
                return view if view.get("status") == "finalized" else None

            view = await until(finalized, timeout=30)
            assert view["received_sat"] == 30_000 and view["match"] == "exact"
            assert view["lightning"] == {"payment_hash": made["lightning"]["payment_hash"], "state": "settled"}
            status, shown = await client.get("/v1/orders/h-1/invoice")
            assert status == 200 and shown["state"] == "settled" and shown["amount_msat"] == 30_000_000
            status, missing = await client.get("/v1/orders/nope/invoice")
            assert status == 404 and missing["error"]["code"] == "not_found"
    finally:
        service.stop()
