"""The swap routes over HTTP (`serve`, whose monitor follows the swaps) mirror the CLI."""
from __future__ import annotations

import aiohttp
import pytest

from tests.service_harness import Client, Service, api_key, service_env, until
from tests.swap_counterparty import Counterparty, htlc_script
from tests.test_withdrawals_regtest import funded_shop

pytestmark = pytest.mark.node


async def test_swap_routes_follow_the_cli_contract(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(300_000,))
    cp = await Counterparty.make(node)
    env = service_env(shop.env)
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            w = Client(session, service.url, api_key(env, "withdraw"))
            r = Client(session, service.url, api_key(env, "read"))
            terms = {"counterparty_pubkey": cp.pub.hex(), "amount_sat": 50_000, "receive_sat": 40_000}
            s, init = await w.post("/v1/swaps/initiate", {**terms, "timeout_blocks": 4, "fee_rate": 2},
                                   headers={"Idempotency-Key": "swap-1"})
            assert s == 201 and init["state"] == "INITIATED" and init["funding_txid"], init
            sid = init["swap_id"]
            s, again = await w.post("/v1/swaps/initiate", {**terms, "timeout_blocks": 4, "fee_rate": 2},
                                    headers={"Idempotency-Key": "swap-1"})
            assert s == 201 and again["swap_id"] == sid                # no second lock
            await node.mine(1)

            async def state(wanted: str) -> bool:
                return (await r.get(f"/v1/swaps/{sid}"))[1]["state"] == wanted

            await until(lambda: state("LOCKED"))
            assert (await r.get(f"/v1/swaps/{sid}"))[1] == shop.cli("swap", "show", sid)[1]
            s, e = await w.post(f"/v1/swaps/{sid}/refund", {})
            assert s == 400 and e["error"]["code"] == "timelock_not_reached" and e["error"]["locktime"] == \
                init["locktime"]
            s, e = await w.post(f"/v1/swaps/{sid}/redeem", {})
            assert s == 400 and e["error"]["code"] == "usage"

            s, acc = await w.post("/v1/swaps/accept", terms)
            assert s == 201 and set(acc) == {"swap_id", "role", "state", "our_pubkey"}
            wrong = htlc_script(cp.payment_hash, cp.pub, bytes.fromhex(acc["our_pubkey"]), 500)
            s, e = await w.post(f"/v1/swaps/{acc['swap_id']}/participate", {
                "payment_hash": cp.payment_hash.hex(), "counter_txid": init["funding_txid"],
                "counter_vout": init["funding_vout"], "counter_script": bytes(wrong).hex()})
            assert s == 400 and e["error"]["code"] == "counter_script_mismatch"
            s, cancelled = await w.post(f"/v1/swaps/{acc['swap_id']}/cancel", {})
            assert s == 200 and cancelled["state"] == "CANCELLED"
            s, listed = await r.get("/v1/swaps?state=CANCELLED")
            assert s == 200 and [v["swap_id"] for v in listed["swaps"]] == [acc["swap_id"]]
            s, e = await r.get("/v1/swaps?state=DONE")
            assert s == 400
            for unknown in ("0" * 32, "nope"):   # as `swap show`: not_found
                s, e = await r.get(f"/v1/swaps/{unknown}")
                assert s == 404 and e["error"]["code"] == "not_found", (unknown, e)
            s, e = await r.get("/v1/swaps/accept")   # a POST-only path, not a swap id
            assert s == 405 and e["error"]["code"] == "method_not_allowed"
            s, e = await w.post("/v1/swaps/accept", {**terms, "amount_sat": 100})
            assert s == 400 and e["error"]["code"] == "invalid_swap"

            await node.mine(init["locktime"] - await node.call("getblockcount"))
            await until(lambda: state("LOCKED"))

            async def refund_sent() -> bool:
                txid = (await r.get(f"/v1/swaps/{sid}"))[1]["refund_txid"]
                return txid is not None and txid in await node.call("getrawmempool")

            await until(refund_sent)
            await node.mine(1)
            await until(lambda: state("REFUNDED"))
    finally:
        service.stop()
