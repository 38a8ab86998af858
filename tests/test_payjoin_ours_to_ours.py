"""Our sender paying our receiver: `withdraw payjoin` (the CLI, its own process) given the bip21
of an order of another shop whose `serve` answers its `pj=` over real HTTP. The payjoin goes
through, confirms, and both sides count it: the order at what the customer paid, the withdrawal
confirmed at the proposal's txid."""
from __future__ import annotations

import asyncio

import pytest

from tests.payments_harness import Shop, kinds
from tests.test_http_payjoin import Receiver
from tests.test_withdrawals_regtest import wallet_caught_up

pytestmark = pytest.mark.node


async def test_our_sender_pays_our_receiver_as_a_payjoin(node, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "receiver").mkdir()
    (tmp_path / "sender").mkdir()
    r = Receiver(node, tmp_path / "receiver")
    try:
        sender = Shop(node, tmp_path / "sender")
        sender.env["KACCY_SIGNER_MNEMONIC"] = sender.words
        await node.send(sender.order("funding", 500_000)["address"], 500_000)
        await r.fund(200_000)   # a coin of ours to join, in the same block as the sender's
        await wallet_caught_up(node, sender.env["KACCY_BITCOIN_RPC_WALLET"])
        made = await r.api("POST", "/v1/orders", {"order_id": "ours", "amount_sat": 120_000})
        assert "&pj=" in made["bip21"]
        code, out = await asyncio.to_thread(sender.cli, "withdraw", "payjoin", made["bip21"], "--fee-rate", "2",
                                            check=False)
        assert code == 0 and set(out) == {"withdrawal_id", "txid", "state", "payjoin", "fallback_reason"}, out
        assert (out["state"], out["payjoin"], out["fallback_reason"]) == ("broadcast", True, None), out
        assert out["txid"] in await node.call("getrawmempool")
        tx = await node.call("getrawtransaction", out["txid"], True)
        assert len(tx["vin"]) == 2
        proposed = [e for e in await r.events() if e["kind"] == "payjoin_proposed"]
        assert len(proposed) == 1 and proposed[0]["proposal_txid"] == out["txid"]

        await node.mine(1)
        await wallet_caught_up(node, r.watch)
        polled = r.shop.poll()
        assert "order_paid" in kinds(polled), polled
        shown = await r.show("ours")
        assert (shown["received_sat"], shown["match"], shown["txids"]) == (120_000, "exact", [out["txid"]])
        assert shown["payjoin"]["txid"] == out["txid"] and shown["payjoin"]["contributed_sat"] > 0
        await wallet_caught_up(node, sender.env["KACCY_BITCOIN_RPC_WALLET"])
        events = sender.poll()
        assert not [e for e in events if e["kind"] in ("unexpected_spend", "payment_to_unknown_address")], events
        w = sender.cli("withdraw", "show", out["withdrawal_id"])[1]
        assert (w["state"], w["txid"], w["payjoin"]) == ("confirmed", out["txid"], True), w
    finally:
        r.service.stop()
