"""Payment events say what was paid (issue 04, part 4), on the real regtest node through the CLI:
every payment event carries match / expected_sat / received_sat, `order_paid` comes exactly once
when the confirmed outputs cover the order, lateness is judged by the node's first-seen time,
and a tolerance that is not smaller than the amount is refused."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.payments_harness import Shop, kinds

pytestmark = pytest.mark.node


def amounts(event: dict) -> tuple:
    return event["match"], event["expected_sat"], event["received_sat"]


async def mine_raw_payment(node, address: str, sat: int) -> str:  # noqa: ANN001
    """A transaction paying `sat` to `address`, mined straight into a block: the mempool refuses
    an output below the dust limit (a 1-sat one), a block does not."""
    coin = next(c for c in await node.call("listunspent", 100, 9_999_999, wallet="miner")
                if Decimal(c["amount"]) >= 1)
    change = await node.call("getrawchangeaddress", wallet="miner")
    outputs = [{address: str(Decimal(sat) / 100_000_000)},
               {change: str(Decimal(coin["amount"]) - Decimal(sat + 10_000) / 100_000_000)}]
    raw = await node.call("createrawtransaction", [{"txid": coin["txid"], "vout": coin["vout"]}], outputs)
    signed = await node.call("signrawtransactionwithwallet", raw, wallet="miner")
    await node.call("generateblock", node.miner_address, [signed["hex"]])
    await node.settle()
    return (await node.call("decoderawtransaction", signed["hex"]))["txid"]


async def test_a_1_sat_payment_to_a_100000_sat_order_says_underpaid_in_every_event(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    address = shop.order("tiny", 100_000)["address"]
    txid = await mine_raw_payment(node, address, 1)
    events = shop.poll()
    assert kinds(events) == ["payment_detected", "payment_confirmed", "order_underpaid"]
    assert events[0]["txid"] == txid
    await node.mine(5)
    later = shop.poll()
    assert kinds(later) == ["payment_confirmed", "payment_finalized"]
    for event in events + later:
        assert amounts(event) == ("underpaid", 100_000, 1), event
    view = shop.show("tiny")
    assert (view["status"], view["match"], view["received_sat"]) == ("finalized", "underpaid", 1)


async def test_an_exact_payment_is_paid_once_even_across_a_reorg(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    address = shop.order("exact", 50_000)["address"]
    txid = await node.send(address, 50_000)
    events = shop.poll()
    assert kinds(events) == ["payment_detected"] and amounts(events[0]) == ("exact", 50_000, 50_000)
    (block,) = await node.mine(1)
    events = shop.poll()
    assert kinds(events) == ["payment_confirmed", "order_paid"]
    paid = events[1]
    assert amounts(paid) == ("exact", 50_000, 50_000)
    assert (paid["confirmations"], paid["txids"], paid["confirmed_sat"]) == (1, [txid], 50_000)

    await node.call("invalidateblock", block)   # the reorg takes the confirmation away ...
    await node.settle()
    events = shop.poll()
    assert kinds(events) == ["payment_reorged"] and amounts(events[0]) == ("exact", 50_000, 50_000)
    await node.call("reconsiderblock", block)   # ... and gives it back: not paid a second time
    await node.settle()
    events = shop.poll()
    assert kinds(events) == ["payment_confirmed"] and amounts(events[0]) == ("exact", 50_000, 50_000)


async def test_a_split_payment_is_paid_when_its_second_part_confirms(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    address = shop.order("split", 100_000)["address"]
    first = await node.send(address, 40_000)
    await node.mine(1)
    second = await node.send(address, 60_000)
    events = shop.poll()   # 100,000 received, only 40,000 of it confirmed
    assert kinds(events).count("payment_detected") == 2 and "order_paid" not in kinds(events)
    assert amounts(events[-1]) == ("exact", 100_000, 100_000)
    await node.mine(1)
    events = shop.poll()
    paid = [e for e in events if e["kind"] == "order_paid"]
    assert len(paid) == 1 and amounts(paid[0]) == ("exact", 100_000, 100_000)
    assert (paid[0]["confirmed_sat"], paid[0]["txids"]) == (100_000, sorted([first, second]))
    await node.mine(1)
    assert "order_paid" not in kinds(shop.poll())


async def test_lateness_is_judged_by_when_the_node_first_saw_the_payment(node, tmp_path) -> None:
    """Both payments are polled only after both orders expired: the one the node saw before its
    order's expiry is on time, the one it saw after is late. The node keeps whole seconds."""
    shop = Shop(node, tmp_path)
    before = time.time()
    # Eight seconds: room for a slow `order create` on a loaded 2-core machine.
    on_time = shop.order("on-time", 30_000, "--expires-in", "8")["address"]
    created = time.time()   # it expires between before + 8 and created + 8
    await node.send(on_time, 30_000)
    assert time.time() < before + 7, "the payment must reach the node before its order expires"
    late = shop.order("late", 30_000, "--expires-in", "1")["address"]
    late_expired = time.time() + 1
    time.sleep(max(0.0, late_expired + 1.05 - time.time()))   # a whole second past, as the node counts
    await node.send(late, 30_000)
    time.sleep(max(0.0, created + 8.05 - time.time()))         # the first order has expired too
    events = shop.poll()
    by_order = {}
    for e in events:
        by_order.setdefault(e["order_id"], []).append(e["kind"])
    assert by_order == {"on-time": ["payment_detected"], "late": ["payment_detected", "payment_late"]}
    late_event = next(e for e in events if e["kind"] == "payment_late")
    assert late_event["reason"] == "order_expired" and amounts(late_event) == ("exact", 30_000, 30_000)
    assert shop.show("on-time")["status"] == "unconfirmed"
    # The adapter reads the node's first-seen time from listsinceblock and gettransaction alike.
    container = shop.container()
    chain = await container.gateways.chain()
    seen = {e.outpoint.txid: e.first_seen for e in (await chain.wallet_history(None, 6)).entries}
    views = await chain.wallet_transactions(list(seen))
    await container.shutdown_resources()
    assert {t: v.receives[0].first_seen for t, v in views.items()} == seen
    first_seen = sorted(seen.values())
    assert int(before) <= first_seen[0].timestamp() < before + 3 and first_seen[1].timestamp() > late_expired


async def test_a_tolerance_not_smaller_than_the_amount_is_refused(node, tmp_path) -> None:
    shop = Shop(node, tmp_path, KACCY_TOLERANCE_SAT="5000")
    for amount in ("5000", "4000"):
        rc, out = shop.cli("order", "create", "t", "--amount-sat", amount, check=False)
        assert rc == 2 and out["error"]["code"] == "invalid_order", out
        assert "5000 sat" in out["error"]["message"] and f"{amount} sat" in out["error"]["message"]
    rc, out = shop.cli("order", "show", "t", check=False)
    assert rc == 2 and out["error"]["code"] == "not_found"   # nothing half-written
    assert shop.order("t", 5_001)["amount_sat"] == 5_001
