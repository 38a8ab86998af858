"""Incoming payments end to end on the real regtest node, through the CLI contract."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from decimal import Decimal

import pytest

from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.domain.addresses import MonitorCursor
from tests.payments_harness import CLI, Shop, kinds

pytestmark = pytest.mark.node


async def test_exact_payment_walks_to_finalized_with_events(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    created = shop.order("order-1", 150_000, "--label", "tea")
    assert set(created) == {"order_id", "address", "amount_sat", "bip21", "checkout_url"}
    assert created["bip21"].startswith(f"bitcoin:{created['address']}?amount=0.0015")
    assert shop.order("order-1", 150_000)["address"] == created["address"]   # idempotent
    rc, err = shop.cli("order", "create", "order-1", "--amount-sat", "150001", check=False)
    assert rc != 0 and err["error"]["code"] == "order_conflict" and "150000" in err["error"]["message"]
    assert shop.show("order-1")["status"] == "pending"

    txid = await node.send(created["address"], 150_000)
    events = shop.poll()
    assert kinds(events) == ["payment_detected"] and events[0]["txid"] == txid
    view = shop.show("order-1")
    assert (view["status"], view["match"], view["received_sat"], view["confirmations"], view["txids"]) == (
        "unconfirmed", "exact", 150_000, 0, [txid])
    assert shop.poll() == []   # nothing new: nothing reported twice

    await node.mine(1)
    events = shop.poll()
    assert kinds(events) == ["payment_confirmed", "order_paid"] and events[0]["confirmations"] == 1
    await node.mine(2)
    events = shop.poll()
    assert kinds(events) == ["payment_confirmed"] and events[0]["state"] == "full_confirmed"
    assert events[0]["confirmations"] == 3
    await node.mine(3)
    assert kinds(shop.poll()) == ["payment_finalized"]
    view = shop.show("order-1")
    assert (view["status"], view["confirmations"]) == ("finalized", 6)
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)


async def test_under_over_and_payments_adding_up(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    under = shop.order("under", 100_000)["address"]
    over = shop.order("over", 100_000)["address"]
    split = shop.order("split", 100_000)["address"]
    await node.send(under, 60_000)
    await node.send(over, 130_000)
    await node.send(split, 40_000)
    events = shop.poll()
    assert sorted(kinds(events)) == sorted(["payment_detected"] * 3 + ["order_underpaid"] * 2 + ["order_overpaid"])
    over_event = next(e for e in events if e["kind"] == "order_overpaid")
    assert over_event["difference_sat"] == 30_000
    await node.send(split, 60_000)
    await node.mine(1)
    events = shop.poll()
    assert "payment_detected" in kinds(events) and "order_underpaid" not in kinds(events)
    views = {o: shop.show(o) for o in ("under", "over", "split")}
    assert (views["under"]["match"], views["under"]["received_sat"]) == ("underpaid", 60_000)
    assert (views["over"]["match"], views["over"]["received_sat"]) == ("overpaid", 130_000)
    assert (views["split"]["match"], views["split"]["received_sat"]) == ("exact", 100_000)
    assert len(views["split"]["txids"]) == 2 and views["split"]["status"] == "confirmed"


async def test_tolerance_counts_near_amounts_as_exact(node, tmp_path) -> None:
    shop = Shop(node, tmp_path, KACCY_TOLERANCE_SAT="500")
    address = shop.order("near", 100_000)["address"]
    await node.send(address, 99_600)
    shop.poll()
    assert shop.show("near")["match"] == "exact"


async def test_reorg_moves_payment_back_and_forth_without_double_counting(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    address = shop.order("reorg", 70_000)["address"]
    txid = await node.send(address, 70_000)
    (block,) = await node.mine(1)
    await node.mine(1)
    assert kinds(shop.poll()) == ["payment_detected", "payment_confirmed", "order_paid"]
    assert shop.show("reorg")["confirmations"] == 2

    await node.call("invalidateblock", block)   # two blocks leave the chain; the tx returns to the mempool
    await node.settle()
    events = shop.poll()
    assert kinds(events) == ["payment_reorged"] and events[0]["to"] == "unconfirmed"
    view = shop.show("reorg")
    assert (view["status"], view["received_sat"], view["txids"]) == ("unconfirmed", 70_000, [txid])

    await node.call("reconsiderblock", block)
    await node.settle()
    events = shop.poll()
    assert kinds(events) == ["payment_confirmed"]
    view = shop.show("reorg")
    assert (view["status"], view["received_sat"], view["confirmations"]) == ("confirmed", 70_000, 2)


async def test_rbf_fee_bump_keeps_one_payment_under_the_new_txid(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    address = shop.order("bump", 80_000)["address"]
    payer = await node.fresh_wallet(funded_sat=500_000)
    old = await node.send(address, 80_000, wallet=payer)
    assert kinds(shop.poll()) == ["payment_detected"]
    new = (await node.call("bumpfee", old, wallet=payer))["txid"]
    await node.settle()
    events = shop.poll()
    assert kinds(events) == ["payment_replaced", "payment_detected"]
    assert events[0]["txid"] == old and events[0]["replaced_by"] == new and events[1]["txid"] == new
    view = shop.show("bump")
    assert (view["received_sat"], view["txids"], view["match"]) == (80_000, [new], "exact")
    await node.mine(1)
    assert kinds(shop.poll()) == ["payment_confirmed", "order_paid"]
    assert shop.show("bump")["txids"] == [new]


async def double_spend(node, payer: str, txid: str) -> str:  # noqa: ANN001
    """Spend the inputs of `txid` back to the payer, paying a higher fee (a BIP125 replacement)."""
    tx = await node.call("gettransaction", txid, wallet=payer)
    decoded = await node.call("decoderawtransaction", tx["hex"])
    inputs = [{"txid": i["txid"], "vout": i["vout"]} for i in decoded["vin"]]
    total = Decimal(0)
    for i in inputs:
        prev = await node.call("gettransaction", i["txid"], wallet=payer)
        prev_tx = await node.call("decoderawtransaction", prev["hex"])
        total += prev_tx["vout"][i["vout"]]["value"]
    back = await node.call("getnewaddress", wallet=payer)
    raw = await node.call("createrawtransaction", inputs, [{back: str(total - Decimal("0.0002"))}])
    signed = await node.call("signrawtransactionwithwallet", raw, wallet=payer)
    txid = await node.call("sendrawtransaction", signed["hex"])
    await node.settle()
    return txid


async def test_double_spend_takes_the_payment_away_and_notifies(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    address = shop.order("ds", 90_000)["address"]
    payer = await node.fresh_wallet(funded_sat=300_000)
    txid = await node.send(address, 90_000, wallet=payer)
    assert kinds(shop.poll()) == ["payment_detected"]
    await double_spend(node, payer, txid)
    container = shop.container()
    poll = await container.services.poll_payments()
    events = await poll()
    await container.shutdown_resources()
    assert [e.kind for e in events] == ["payment_double_spent"]
    assert [e.kind for e in shop.notifier.notified] == ["payment_double_spent"]
    view = shop.show("ds")
    assert (view["status"], view["received_sat"], view["match"], view["txids"]) == ("pending", 0, "none", [])
    await node.mine(1)   # the conflict is mined: the original gets negative confirmations
    assert shop.poll() == []
    assert shop.show("ds")["received_sat"] == 0


async def test_unknown_address_late_and_after_final_payments_are_reported(node, tmp_path) -> None:
    shop = Shop(node, tmp_path, KACCY_CONFIRMATIONS="1,1,1")
    address = shop.order("fin", 10_000)["address"]
    await node.send(address, 10_000)
    await node.mine(1)
    assert kinds(shop.poll()) == ["payment_detected", "payment_confirmed", "payment_confirmed", "payment_finalized",
                                  "order_paid"]
    await node.send(address, 5_000)   # a second payment after the order is final
    events = shop.poll()
    assert kinds(events) == ["payment_detected", "payment_late", "order_overpaid"]
    assert events[1]["reason"] == "order_finalized"
    # An address the watch wallet covers (inside the gap) that no order was given.
    from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
    from kaccy_bitcoin.domain.bitcoin import Network
    stray = Bip32AddressDeriver(shop.vpub, Network.REGTEST).address(0, 5)
    await node.send(stray, 7_000)
    events = shop.poll()
    assert kinds(events) == ["payment_to_unknown_address"] and events[0]["subject"] == stray
    assert shop.poll() == []   # reported once


async def test_killed_monitor_and_stale_cursor_lose_and_duplicate_nothing(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    address = shop.order("crash", 55_000)["address"]
    shop.poll()
    await node.send(address, 55_000)
    await node.mine(1)
    proc = subprocess.Popen([CLI, "monitor", "--interval", "0.2"], env=shop.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        engine = make_engine(shop.env["KACCY_DATABASE_URL"])
        uow = SqlUnitOfWorkFactory(engine)
        while time.monotonic() < deadline:
            with uow() as u:
                if u.audit.events("crash"):
                    break
            time.sleep(0.1)
        await node.mine(2)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)   # no clean shutdown: whatever was mid-poll is lost
        proc.wait(10)
    shop.poll()
    await node.mine(3)
    shop.poll()
    with uow() as u:
        log = [e.kind for e in u.audit.events("crash")]
    assert log == ["payment_detected", "payment_confirmed", "order_paid", "payment_confirmed", "payment_finalized"]

    first = await node.call("getblockhash", 1)
    with uow() as u:   # restart with a stale cursor: the whole history is seen again
        u.cursors.set("payments", MonitorCursor(first))
        u.commit()
    assert shop.poll() == []
    view = shop.show("crash")
    assert (view["received_sat"], view["status"], len(view["txids"])) == (55_000, "finalized", 1)
    engine.dispose()


async def test_bad_input_gets_typed_errors(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    for args, code in [
        (["order", "create", "x", "--amount-sat", "0"], "invalid_order"),
        (["order", "create", "x", "--amount-sat", "-5"], "usage"),
        (["order", "create", "x", "--amount-sat", "1.5"], "usage"),
        (["order", "create", "bad id!", "--amount-sat", "5"], "invalid_order"),
        (["order", "create", "x", "--amount-sat", "5", "--expires-in", "0"], "invalid_order"),
        (["order", "show", "missing"], "not_found"),
        (["order", "frobnicate"], "usage"),
    ]:
        rc, out = shop.cli(*args, check=False)
        assert rc == 2 and out["error"]["code"] == code, (args, out)
    bad = Shop(node, tmp_path, KACCY_XPUB="tpubnotakey")
    rc, out = bad.cli("order", "create", "y", "--amount-sat", "5", check=False)
    assert rc == 2 and out["error"]["code"] == "invalid_extended_key"
    down = Shop(node, tmp_path, KACCY_BITCOIN_RPC_URL="http://127.0.0.1:9")
    rc, out = down.cli("monitor", "--once", check=False)
    assert rc == 1 and out["error"]["code"] == "node_unreachable"


async def test_bip329_export_lists_every_address_with_its_label(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    a = shop.order("exp-1", 1_000, "--label", "green tea")["address"]
    b = shop.order("exp-2", 2_000)["address"]
    out = tmp_path / "labels.jsonl"
    result = shop.cli("addresses", "export", "--output", str(out))[1]
    assert result == {"path": str(out), "count": 2}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"type": "addr", "ref": a, "label": "green tea"},
                     {"type": "addr", "ref": b, "label": "order exp-2"}]
