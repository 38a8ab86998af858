"""Zero-conf on real regtest nodes, through the CLI: the session node relays full-RBF (Knots' and
Core's default), a second node of this module runs with `-mempoolfullrbf=0`, as an operator who
wants to accept payments before they confirm does."""
from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from typing import AsyncIterator

import aiohttp
import pytest

from kaccy_bitcoin import KaccyBitcoin
from kaccy_bitcoin.adapters.bitcoin_core.backend import BitcoinCoreBackend
from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.domain.bitcoin import Txid
from kaccy_bitcoin.domain.money import Satoshis
from tests.node_fixture import Node
from tests.payments_harness import CLI, Shop, kinds
from tests.service_harness import Client, Service, api_key, service_env

pytestmark = pytest.mark.node
ZEROCONF = {"KACCY_ZEROCONF_MAX_SAT": "100000"}


@pytest.fixture(scope="module")
async def plain_node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    """A regtest node that relays only replacements that signal BIP125 (no full-RBF)."""
    regtest = RegtestNode(tmp_path_factory.mktemp("bitcoind-no-fullrbf"), extra_args=("-mempoolfullrbf=0",))
    regtest.start()
    rpc = BitcoinRpc(regtest.url, user=regtest.user, password=regtest.password)
    helper = Node(regtest, rpc)
    try:
        await helper.setup()
        assert (await BitcoinCoreBackend(rpc).mempool_info()).full_rbf is False
        yield helper
    finally:
        await rpc.close()
        regtest.stop()


async def pay(node: Node, address: str, sat: int, *, replaceable: bool, sat_per_vb: str, wallet: str = "miner") -> str:
    txid = await node.call("sendtoaddress", address, Satoshis(sat).to_btc(), "", "", False, replaceable, None,
                           "unset", None, Decimal(sat_per_vb), wallet=wallet)
    await node.settle()
    await node.in_mempool(txid, wallet)
    return txid


def detected(events: list[dict]) -> dict:
    (event,) = [e for e in events if e["kind"] == "payment_detected"]
    return event


async def test_a_payment_signalling_rbf_at_a_low_fee_scores_high_and_is_not_accepted(node, tmp_path) -> None:
    shop = Shop(node, tmp_path, **ZEROCONF)
    address = shop.order("zc-rbf", 50_000)["address"]
    txid = await pay(node, address, 50_000, replaceable=True, sat_per_vb="1.5")
    events = shop.poll()
    assert kinds(events) == ["payment_detected"]
    risk = detected(events)["zeroconf_risk"]
    assert {"replaceable", "fee_near_mempool_minimum"} <= set(risk["reasons"]) and risk["score"] >= 85
    # What the adapter read: the signal, the fee rate, and the node's full-RBF setting.
    chain = BitcoinCoreBackend(node.rpc)   # the fixture's RPC client: not closed here
    (entry,) = (await chain.mempool_entries([Txid(txid)])).values()
    assert entry.replaceable and entry.ancestor_count == 1 and entry.fee.value * 1000 // entry.vsize < 2000
    assert (await chain.mempool_info()).full_rbf is True
    assert await chain.mempool_entries([Txid("00" * 32)]) == {Txid("00" * 32): None}
    view = shop.show("zc-rbf")
    assert view["accepted_zeroconf"] is False and view["zeroconf_double_spend"] is None
    assert view["payments"] == [{"txid": txid, "vout": view["payments"][0]["vout"], "amount_sat": 50_000,
                                 "confirmations": 0, "status": "active", "zeroconf_risk": risk}]
    await node.mine(1)
    assert kinds(shop.poll()) == ["payment_confirmed", "order_paid"]
    view = shop.show("zc-rbf")
    assert view["accepted_zeroconf"] is False
    assert view["payments"][0]["confirmations"] == 1 and view["payments"][0]["zeroconf_risk"] == risk   # kept


async def test_on_a_full_rbf_node_even_a_payment_that_does_not_signal_is_replaceable(node, tmp_path) -> None:
    shop = Shop(node, tmp_path, **ZEROCONF)
    address = shop.order("zc-full", 50_000)["address"]
    await pay(node, address, 50_000, replaceable=False, sat_per_vb="25")
    events = shop.poll()
    assert kinds(events) == ["payment_detected"]
    assert "replaceable" in detected(events)["zeroconf_risk"]["reasons"]
    assert shop.show("zc-full")["accepted_zeroconf"] is False


async def test_a_non_replaceable_payment_at_a_high_fee_without_full_rbf_is_accepted_once(plain_node, tmp_path) -> None:
    shop = Shop(plain_node, tmp_path, **ZEROCONF)
    address = shop.order("zc-ok", 60_000)["address"]
    txid = await pay(plain_node, address, 60_000, replaceable=False, sat_per_vb="25")
    events = shop.poll()
    assert kinds(events) == ["payment_detected", "order_accepted_zeroconf"]
    assert detected(events)["zeroconf_risk"]["score"] <= 30
    accepted = events[1]
    assert (accepted["order_id"], accepted["txids"], accepted["accepted_sat"]) == ("zc-ok", [txid], 60_000)
    view = shop.show("zc-ok")
    assert (view["accepted_zeroconf"], view["status"], view["confirmations"]) == (True, "unconfirmed", 0)
    assert shop.poll() == []
    await plain_node.mine(1)
    assert kinds(shop.poll()) == ["payment_confirmed", "order_paid"]   # it still goes through every depth
    await plain_node.mine(5)
    assert kinds(shop.poll()) == ["payment_confirmed", "payment_finalized"]
    shown = shop.show("zc-ok")
    assert shown["accepted_zeroconf"] is True and shown["payments"][0]["confirmations"] == 6
    # The same JSON over HTTP and through the library's facade.
    env = service_env(shop.env)
    key = api_key(env, "read")
    service = Service(env, tmp_path / "serve.log", "--no-monitor", "--no-webhooks")
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await Client(session, service.url, key).get("/v1/orders/zc-ok")
    finally:
        assert service.stop() == 0
    assert status == 200 and body == shown
    async with KaccyBitcoin.from_env({k: v for k, v in shop.env.items() if k.startswith("KACCY_")}) as kaccy:
        assert (await kaccy.show_order("zc-ok")).to_dict() == shown
    listed = shop.cli("events", "--limit", "1000")[1]["events"]   # the outbox
    assert [e["kind"] for e in listed].count("order_accepted_zeroconf") == 1


async def test_with_the_setting_off_nothing_is_accepted(plain_node, tmp_path) -> None:
    shop = Shop(plain_node, tmp_path)
    address = shop.order("zc-off", 60_000)["address"]
    await pay(plain_node, address, 60_000, replaceable=False, sat_per_vb="25")
    events = shop.poll()
    assert kinds(events) == ["payment_detected"] and detected(events)["zeroconf_risk"]["score"] <= 30
    assert shop.show("zc-off")["accepted_zeroconf"] is False


async def conflicting_block(node: Node, payer: str, txid: str) -> str:
    """Mine a block holding a transaction that spends `txid`'s inputs back to the payer (a miner's
    double spend: the node's mempool, without full-RBF, would refuse it)."""
    tx = await node.call("gettransaction", txid, wallet=payer)
    decoded = await node.call("decoderawtransaction", tx["hex"])
    inputs = [{"txid": i["txid"], "vout": i["vout"]} for i in decoded["vin"]]
    total = Decimal(0)
    for i in inputs:
        prev = await node.call("decoderawtransaction", (await node.call("gettransaction", i["txid"], wallet=payer))["hex"])
        total += prev["vout"][i["vout"]]["value"]
    back = await node.call("getnewaddress", wallet=payer)
    raw = await node.call("createrawtransaction", inputs, [{back: str(total - Decimal("0.0002"))}])
    signed = await node.call("signrawtransactionwithwallet", raw, wallet=payer)
    await node.call("generateblock", node.miner_address, [signed["hex"]])
    await node.settle()
    return (await node.call("decoderawtransaction", signed["hex"]))["txid"]


async def test_a_double_spend_of_an_accepted_payment_alerts_once(plain_node, tmp_path) -> None:
    shop = Shop(plain_node, tmp_path, **ZEROCONF)
    address = shop.order("zc-ds", 40_000)["address"]
    payer = await plain_node.fresh_wallet(funded_sat=200_000)
    txid = await pay(plain_node, address, 40_000, replaceable=False, sat_per_vb="25", wallet=payer)
    assert kinds(shop.poll()) == ["payment_detected", "order_accepted_zeroconf"]
    rival = await conflicting_block(plain_node, payer, txid)
    proc = subprocess.run([CLI, "monitor", "--once"], env=shop.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = json.loads(proc.stdout)["events"]
    assert kinds(events) == ["payment_double_spent", "zeroconf_double_spend"]
    lost = events[1]
    assert (lost["order_id"], lost["txids"], lost["amount_lost_sat"]) == ("zc-ds", [txid], 40_000)
    # The notifier (the log, by default) tells the operator, once.
    assert proc.stderr.count("admin notification: zeroconf_double_spend") == 1
    assert shop.poll() == []
    await plain_node.mine(1)
    assert "zeroconf_double_spend" not in kinds(shop.poll())
    view = shop.show("zc-ds")
    assert view["accepted_zeroconf"] is True and view["received_sat"] == 0
    assert view["zeroconf_double_spend"]["txids"] == [txid] and view["zeroconf_double_spend"]["amount_lost_sat"] == 40_000
    assert view["payments"][0]["status"] == "double_spent"
    assert rival != txid


async def test_a_fee_bump_of_an_accepted_payment_is_reported_with_nothing_lost(node, tmp_path) -> None:
    # Full-RBF makes every payment `replaceable` (50): an operator accepting that sets the maximum score higher.
    shop = Shop(node, tmp_path, **ZEROCONF, KACCY_ZEROCONF_MAX_SCORE="60")
    address = shop.order("zc-bump", 45_000)["address"]
    payer = await node.fresh_wallet(funded_sat=200_000)
    txid = await pay(node, address, 45_000, replaceable=True, sat_per_vb="25", wallet=payer)
    events = shop.poll()
    assert kinds(events) == ["payment_detected", "order_accepted_zeroconf"]
    assert detected(events)["zeroconf_risk"]["reasons"] == ["replaceable"]
    bumped = (await node.call("bumpfee", txid, wallet=payer))["txid"]
    await node.settle()
    events = shop.poll()
    assert sorted(kinds(events)) == ["payment_detected", "payment_replaced", "zeroconf_double_spend"]
    lost = next(e for e in events if e["kind"] == "zeroconf_double_spend")
    assert (lost["txids"], lost["replaced_by"], lost["amount_lost_sat"]) == ([txid], [bumped], 0)
    assert "conflict_seen" in detected(events)["zeroconf_risk"]["reasons"]   # the replacement scores higher
    assert shop.poll() == []
    view = shop.show("zc-bump")
    assert view["received_sat"] == 45_000 and view["zeroconf_double_spend"]["amount_lost_sat"] == 0
    assert sorted(p["status"] for p in view["payments"]) == ["active", "replaced"]
