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


async def test_lightning_payouts_over_http_go_through_the_controls(node, tmp_path, fake) -> None:  # noqa: ANN001
    """A refused payout is a 4xx with the CLI's code (never a 200 `failed`); a risky one is held,
    approved on the withdrawals' approve route, then sent; the audit trail has `ln_payment`."""
    shop = Shop(node, tmp_path, KACCY_LND_REST_URL=fake.rest_url, KACCY_LND_MACAROON=fake.info["macaroon"],
                KACCY_LND_TLS_CERT=fake.info["tls_cert"], KACCY_REVIEW_SCORE="15")
    env = service_env(shop.env)
    payer, admin = api_key(env, "withdraw"), api_key(env, "admin")
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            client, operator = Client(session, service.url, payer), Client(session, service.url, admin)
            status, _ = await operator.post("/v1/limits", {"user": "ann", "daily_sat": 30_000})
            assert status == 200

            async def pay(body: dict, key: str) -> tuple[int, dict]:
                return await client.post("/v1/lightning/payments", body, headers={"Idempotency-Key": key})

            big = await fake.invoice_elsewhere(30_000_000, "over ann's limit with its fee limit")
            status, out = await pay({"payment_request": big["payment_request"], "user": "ann"}, "p-1")
            assert status == 422 and (out["error"]["code"], out["error"]["limit"]) == ("limit_exceeded", "daily")
            free = await fake.invoice_elsewhere(2_000_000, "no routing fee allowed, as ln pay --max-fee-sat 0")
            status, out = await pay({"payment_request": free["payment_request"], "max_fee_sat": 0}, "p-0")
            assert status == 200 and out["max_fee_msat"] == 0, out
            small = await fake.invoice_elsewhere(10_000_000, "risky")
            status, out = await pay({"payment_request": small["payment_request"], "max_fee_sat": 51}, "p-2")
            assert status == 422 and out["error"]["code"] == "fee_too_high" and out["error"]["max_fee_sat"] == 50
            status, out = await pay({"payment_request": small["payment_request"], "max_fee_sat": 10**12}, "p-2b")
            assert status == 422 and out["error"]["code"] == "fee_too_high", out      # as ln pay says it
            status, held = await pay({"payment_request": small["payment_request"], "user": "ann"}, "p-3")
            assert status == 200 and held["state"] == "held" and held["user"] == "ann", held
            pid = held["payment_id"]
            status, out = await client.post(f"/v1/lightning/payments/{pid}/send", {})
            assert status == 409 and out["error"]["code"] == "withdrawal_held"
            status, out = await operator.post(f"/v1/withdrawals/{pid}/approve", {"by": "olivia"})
            assert status == 200 and out == {"payment_id": pid, "state": "pending"}
            status, paid = await client.post(f"/v1/lightning/payments/{pid}/send", {})
            assert status == 200 and paid["state"] == "succeeded" and paid["fee_msat"] > 0, paid
            status, shown = await client.get(f"/v1/lightning/payments/{pid}")
            assert status == 200 and shown == paid
            status, audit = await operator.get(f"/v1/audit?subject={pid}")
            assert status == 200 and [e["kind"] for e in audit["entries"]] == [
                "ln_payment", "ln_payment_held", "ln_payment_approved", "ln_payment_sent", "ln_payment_succeeded"]
    finally:
        service.stop()
