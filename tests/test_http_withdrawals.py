"""Withdrawals, addresses and Lightning routes over HTTP against the regtest node."""
from __future__ import annotations

import aiohttp
import pytest

from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env, until

pytestmark = pytest.mark.node


async def test_withdrawal_routes_follow_the_cli_contract(node, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    shop.env["KACCY_SIGNER_MNEMONIC"] = shop.words
    env = service_env(shop.env)
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            w = Client(session, service.url, api_key(env, "withdraw"))
            r = Client(session, service.url, api_key(env, "read"))
            o = Client(session, service.url, api_key(env, "orders"))
            for n, amount in enumerate((200_000, 300_000, 500_000)):
                s, order = await o.post("/v1/orders", {"order_id": f"fund-{n}", "amount_sat": amount})
                await node.send(order["address"], amount)
            await node.mine(1)

            async def funded() -> bool:
                views = [(await r.get(f"/v1/orders/fund-{n}"))[1] for n in range(3)]
                return all(v["status"] == "confirmed" for v in views)

            await until(funded)
            dest = await node.call("getnewaddress", wallet="miner")
            one = {"outputs": [{"address": dest, "amount_sat": 150_000}], "fee_rate": 3}
            s, created = await w.post("/v1/withdrawals", one, headers={"Idempotency-Key": "w-1"})
            assert s == 201 and {"withdrawal_id", "psbt", "fee_sat", "inputs", "outputs", "state"} <= set(created)
            s, again = await w.post("/v1/withdrawals", one, headers={"Idempotency-Key": "w-1"})
            assert s == 201 and again == created                      # no second withdrawal
            wid = created["withdrawal_id"]
            s, shown = await r.get(f"/v1/withdrawals/{wid}")
            cli_view = shop.cli("withdraw", "show", wid)[1]
            # A read key sees the withdrawal without its PSBT (nor so any signature); withdraw and admin see it.
            assert s == 200 and "psbt" not in shown and shown == {k: v for k, v in cli_view.items() if k != "psbt"}
            s, listed = await r.get("/v1/withdrawals?state=created")
            assert s == 200 and listed["withdrawals"] == [shown]
            for scope in ("withdraw", "admin"):
                full = Client(session, service.url, api_key(env, scope))
                assert (await full.get(f"/v1/withdrawals/{wid}"))[1] == cli_view
                assert (await full.get("/v1/withdrawals?state=created"))[1]["withdrawals"] == [cli_view]

            s, e = await w.post(f"/v1/withdrawals/{wid}/sign", {"signer": "ledger"})
            assert s == 400 and "signer" in e["error"]["message"]
            s, e = await w.post(f"/v1/withdrawals/{wid}/broadcast", {})
            assert s == 409 and e["error"]["code"] == "invalid_withdrawal_state", e
            s, signed = await w.post(f"/v1/withdrawals/{wid}/sign", {"signer": "software"})
            assert s == 200 and signed["state"] == "signed"
            s, shown = await r.get(f"/v1/withdrawals/{wid}")
            assert s == 200 and shown["state"] == "signed" and "psbt" not in shown
            assert (await r.get("/v1/withdrawals?state=signed"))[1]["withdrawals"] == [shown]
            s, sent = await w.post(f"/v1/withdrawals/{wid}/broadcast", {}, headers={"Idempotency-Key": "b-1"})
            assert s == 200 and sent["state"] == "broadcast" and len(sent["txid"]) == 64
            assert sent["txid"] in await node.call("getrawmempool")

            s, e = await w.post(f"/v1/withdrawals/{wid}/bump", {"fee_rate": 1})
            assert s == 400 and e["error"]["code"] == "idempotency_key_required"
            s, bumped = await w.post(f"/v1/withdrawals/{wid}/bump", {"fee_rate": "12"},
                                     headers={"Idempotency-Key": "bump-1"})
            assert s == 201 and bumped["withdrawal_id"] != wid, bumped
            s, _ = await w.post(f"/v1/withdrawals/{bumped['withdrawal_id']}/sign", {"signer": "software"})
            s, sent2 = await w.post(f"/v1/withdrawals/{bumped['withdrawal_id']}/broadcast", {})
            assert s == 200 and sent2["txid"] != sent["txid"]

            s, other = await w.post("/v1/withdrawals", {"outputs": [{"address": dest, "amount_sat": 40_000}]},
                                    headers={"Idempotency-Key": "w-2"})
            assert s == 201
            s, cancelled = await w.post(f"/v1/withdrawals/{other['withdrawal_id']}/cancel")
            assert s == 200 and cancelled == {"withdrawal_id": other["withdrawal_id"], "state": "rejected"}
            s, e = await w.post(f"/v1/withdrawals/{other['withdrawal_id']}/void", {},
                                headers={"Idempotency-Key": "v-1"})
            assert s in (409, 400) and e["error"]["code"] in ("invalid_withdrawal_state", "illegal_transition"), e
            s, e = await w.post(f"/v1/withdrawals/{wid}/cpfp", {"fee_rate": 20}, headers={"Idempotency-Key": "c-1"})
            assert s >= 400 and "error" in e                       # replaced by the bump: nothing to lift
            s, e = await w.post("/v1/withdrawals", {"outputs": [{"address": dest, "amount_sat": 10**15}]},
                                headers={"Idempotency-Key": "w-3"})
            assert s == 422 and e["error"]["code"] == "insufficient_funds"
            s, e = await w.post("/v1/withdrawals", {"outputs": [{"address": "bc1qnope", "amount_sat": 1000}]},
                                headers={"Idempotency-Key": "w-4"})
            assert s == 400 and e["error"]["code"] == "invalid_address"
            s, e = await w.get("/v1/withdrawals/nope")
            assert s == 404

            s, book = await r.get("/v1/addresses?limit=2")
            assert s == 200 and len(book["addresses"]) == 2 and book["next"] == 2
            assert {"type", "ref", "label"} <= set(book["addresses"][0])
            s, rest = await r.get("/v1/addresses?offset=2&limit=1000")
            assert s == 200 and rest["next"] is None and len(rest["addresses"]) >= 1

            s, e = await r.get("/v1/lightning/channels")          # no LND configured: said so, a 4xx
            assert (s, e["error"]["code"]) == (409, "lightning_unavailable")
            assert "KACCY_LND_REST_URL" in e["error"]["message"]
            s, e = await w.post("/v1/lightning/payments", {"payment_request": "lnbcrt1"},
                                headers={"Idempotency-Key": "ln-1"})
            assert (s, e["error"]["code"]) == (409, "lightning_unavailable")
    finally:
        service.stop()


async def test_limits_audit_and_approval_routes(node, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    env = service_env(shop.env)
    service = Service(env, tmp_path / "serve.log", "--no-monitor")
    try:
        async with aiohttp.ClientSession() as session:
            admin = Client(session, service.url, api_key(env, "admin"))
            r = Client(session, service.url, api_key(env, "read"))
            w = Client(session, service.url, api_key(env, "withdraw"))
            s, limits = await admin.post("/v1/limits", {"user": "alice", "single_max_sat": 1000, "daily_sat": 5000})
            assert s == 200, limits
            s, shown = await r.get("/v1/limits?user=alice")
            assert s == 200 and shown == shop.cli("limits", "show", "--user", "alice")[1]
            s, e = await w.post("/v1/limits", {"user": "alice", "daily_sat": 1})
            assert s == 403
            s, e = await admin.post("/v1/limits", {"user": "alice", "daily_sat": -1})
            assert s == 400 and e["error"]["code"] == "invalid_request"
            dest = await node.call("getnewaddress", wallet="miner")
            s, e = await w.post("/v1/withdrawals", {"outputs": [{"address": dest, "amount_sat": 5000}], "user": "alice"},
                                headers={"Idempotency-Key": "too-much"})
            assert s == 422 and e["error"]["code"] == "limit_exceeded", e
            assert e["error"]["limit_sat"] == 1000 and "remaining_sat" in e["error"]
            s, e = await admin.post("/v1/withdrawals/nope/approve", {"by": "op-1"})
            assert s == 404
            s, e = await w.post("/v1/withdrawals/nope/combine", {"psbt": "cHNidP8="})
            assert s >= 400 and "error" in e
            s, e = await w.post("/v1/withdrawals/nope/combine", {})
            assert s == 400 and "psbt" in e["error"]["message"]
            s, wallets = await r.get("/v1/wallets")
            assert s == 200 and wallets == shop.cli("wallet", "list")[1]
            s, custody = await r.get("/v1/custody")
            rc, cli_custody = shop.cli("custody", "status", check=False)
            assert (s == 200) == (rc == 0) and (custody == cli_custody if s == 200
                                                else custody["error"]["code"] == cli_custody["error"]["code"])
            s, verified = await admin.get("/v1/audit/verify")
            assert s == 200 and verified["ok"] is True and verified == shop.cli("audit", "verify")[1]
            s, entries = await admin.get("/v1/audit?subject=alice&limit=10")
            assert s == 200 and entries == shop.cli("audit", "query", "--subject", "alice", "--limit", "10")[1]
            s, since = await admin.get("/v1/audit?since=2020-01-01T00:00:00")
            assert s == 200
            s, e = await admin.get("/v1/audit?since=yesterday")
            assert s == 400 and "since" in e["error"]["message"]
            s, e = await r.get("/v1/audit")
            assert s == 403
    finally:
        service.stop()
