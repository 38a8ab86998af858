"""POST /v1/withdrawals/payjoin over real HTTP (a `serve` process) against a BIP78 receiver that
is not our code (tests/payjoin_receiver.py)."""
from __future__ import annotations

import aiohttp
import pytest

from tests.payjoin_receiver import Receiver
from tests.service_harness import Client, Service, api_key, service_env, until
from tests.test_payjoin_sender_regtest import funded_with_coins, receiver_wallet, uri

pytestmark = pytest.mark.node


async def test_the_http_route_pays_a_payjoin_and_refuses_a_bad_uri(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_with_coins(node, tmp_path, 1)
    env = service_env(shop.env)
    receiver = Receiver(node, await receiver_wallet(node))
    await receiver.start()
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            w = Client(session, service.url, api_key(env, "withdraw"))
            r = Client(session, service.url, api_key(env, "read"))
            pay_to = await node.call("getnewaddress", "", "bech32", wallet=receiver.wallet)
            s, bad = await w.post("/v1/withdrawals/payjoin", {"uri": f"bitcoin:{pay_to}"},
                                  headers={"Idempotency-Key": "pj-0"})
            assert s == 400 and bad["error"]["code"] == "invalid_uri", bad
            s, denied = await r.post("/v1/withdrawals/payjoin", {"uri": uri(pay_to, receiver.url)},
                                     headers={"Idempotency-Key": "pj-r"})
            assert s == 403, denied
            body = {"uri": uri(pay_to, receiver.url), "fee_rate": 2, "max_additional_fee_sat": 500, "user": "bob"}
            s, out = await w.post("/v1/withdrawals/payjoin", body, headers={"Idempotency-Key": "pj-1"})
            assert s == 201 and (out["state"], out["payjoin"], out["fallback_reason"]) == ("broadcast", True, None), out
            s, again = await w.post("/v1/withdrawals/payjoin", body, headers={"Idempotency-Key": "pj-1"})
            assert (s, again) == (201, out) and len(receiver.requests) == 1      # paid once
            assert receiver.requests[0]["query"]["maxadditionalfeecontribution"] == "500"
            await node.mine(1)

            async def confirmed() -> bool:
                shown = (await r.get(f"/v1/withdrawals/{out['withdrawal_id']}"))[1]
                return shown["state"] == "confirmed" and shown["txid"] == out["txid"] and shown["payjoin"] is True

            await until(confirmed)
    finally:
        service.stop()
        await receiver.stop()
