"""Swaps driven as a counterparty would, through the CLI on the regtest node: the races the
contract names (a counterparty claim beating our refund, a secret revealed too late, a
monitor killed -9 between seeing the secret and redeeming)."""
from __future__ import annotations

import http.server
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.payments_harness import CLI, kinds
from tests.swap_counterparty import Counterparty, htlc_script
from tests.test_swaps_regtest import participant_locked, refused, swap, swap_kinds, tip
from tests.test_withdrawals_regtest import funded_shop

pytestmark = pytest.mark.node


async def test_a_counterparty_claim_replacing_our_refund_in_the_mempool_wins(node, tmp_path) -> None:  # noqa: ANN001
    shop, cp, sid, part = await participant_locked(node, tmp_path)
    await node.mine(part["locktime"] - await tip(node))
    assert swap_kinds(shop.poll()) == ["swap_locked", "swap_refund_broadcast"]
    refund = swap(shop, "show", sid)[1]["refund_txid"]
    assert refund in await node.call("getrawmempool")

    # The initiator reveals the secret late: its claim (a higher fee) replaces our refund.
    script2 = htlc_script(cp.payment_hash, cp.pub, bytes.fromhex(part["our_pubkey"]), part["locktime"])
    claim = await cp.spend(script2, part["funding_txid"], part["funding_vout"], 40_000, preimage=cp.preimage,
                           fee_sat=15_000)
    claim_txid = await node.call("sendrawtransaction", claim.hex())
    await node.settle()
    assert refund not in await node.call("getrawmempool")

    events = shop.poll()   # the claim is only in the mempool: the secret is read from it now
    assert swap_kinds(events) == ["swap_preimage_revealed", "swap_redeemed"]
    assert [e["txid"] for e in events if e["kind"] == "swap_preimage_revealed"] == [claim_txid]
    shown = swap(shop, "show", sid)[1]
    assert shown["preimage"] == cp.preimage.hex() and shown["redeem_txid"] in await node.call("getrawmempool")
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_completed"]
    assert swap(shop, "show", sid)[1]["state"] == "COMPLETED"
    assert swap_kinds(shop.poll()) == []


async def test_swap_refund_after_a_claim_replaced_our_refund_is_htlc_already_spent(node, tmp_path) -> None:  # noqa: ANN001
    shop, cp, sid, part = await participant_locked(node, tmp_path, KACCY_SWAP_AUTO_REFUND="off")
    await node.mine(part["locktime"] - await tip(node))
    refund = swap(shop, "refund", sid)[1]["refund_txid"]
    script2 = htlc_script(cp.payment_hash, cp.pub, bytes.fromhex(part["our_pubkey"]), part["locktime"])
    claim = await cp.spend(script2, part["funding_txid"], part["funding_vout"], 40_000, preimage=cp.preimage,
                           fee_sat=15_000)
    await node.call("sendrawtransaction", claim.hex())
    await node.settle()
    assert refund not in await node.call("getrawmempool")
    assert refused(shop, "refund", sid)["code"] == "htlc_already_spent"   # not our refund "sent again"
    assert swap(shop, "show", sid)[1]["preimage"] == cp.preimage.hex()
    assert swap_kinds(shop.poll()) == ["swap_locked", "swap_redeemed"]
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_completed"]


async def test_a_secret_revealed_after_the_initiator_took_its_lock_back_redeems_nothing(node, tmp_path) -> None:  # noqa: ANN001
    shop, cp, sid, part = await participant_locked(node, tmp_path)
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_locked"]
    # The initiator claims HTLC2, and while our monitor is down, takes HTLC1 back at its locktime.
    claim = await cp.spend(htlc_script(cp.payment_hash, cp.pub, bytes.fromhex(part["our_pubkey"]), part["locktime"]),
                           part["funding_txid"], part["funding_vout"], 40_000, preimage=cp.preimage)
    await node.call("sendrawtransaction", claim.hex())
    counter = part["counter"]
    await node.mine(counter["locktime"] - await tip(node))
    script1 = htlc_script(cp.payment_hash, bytes.fromhex(part["our_pubkey"]), cp.pub, counter["locktime"])
    back = await cp.spend(script1, counter["txid"], counter["vout"], counter["amount_sat"], preimage=None,
                          locktime=counter["locktime"])
    await node.call("sendrawtransaction", back.hex())
    await node.mine(1)

    events = shop.poll()   # the secret is learnt, but there is nothing left to redeem
    assert swap_kinds(events) == ["swap_preimage_revealed"]
    shown = swap(shop, "show", sid)[1]
    assert shown["preimage"] == cp.preimage.hex() and shown["redeem_txid"] is None
    assert refused(shop, "redeem", sid)["code"] == "counter_htlc_spent"
    assert swap(shop, "show", sid)[1]["redeem_txid"] is None
    assert swap_kinds(shop.poll()) == []


async def test_one_poll_takes_the_initiator_to_completed_and_its_lock_is_still_refunded(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(300_000,))
    cp = await Counterparty.make(node)
    init = swap(shop, "initiate", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "50000",
                "--receive-sat", "40000", "--timeout-blocks", "20", "--fee-rate", "2")[1]
    sid, our, hash_ = init["swap_id"], bytes.fromhex(init["our_pubkey"]), bytes.fromhex(init["payment_hash"])
    script2 = htlc_script(hash_, our, cp.pub, await tip(node) + 5)
    txid2, vout2 = await cp.lock(script2, 40_000, mine=False)
    redeemed = swap(shop, "redeem", sid, "--counter-txid", txid2, "--counter-vout", str(vout2),
                    "--counter-script", bytes(script2).hex())[1]
    assert redeemed["state"] == "INITIATED"
    await node.mine(1)
    events = [e for e in shop.poll() if e["kind"].startswith("swap_")]
    assert [(e["kind"], e["state"], e["swap_id"], e["subject"]) for e in events] == [
        ("swap_locked", "LOCKED", sid, sid), ("swap_completed", "COMPLETED", sid, sid)]

    # Nobody claims our lock: at its locktime it is refunded, the swap staying COMPLETED.
    await node.mine(init["locktime"] - await tip(node))
    events = [e for e in shop.poll() if e["kind"].startswith("swap_")]
    assert [(e["kind"], e["state"]) for e in events] == [("swap_refund_broadcast", "COMPLETED")]
    refund = swap(shop, "show", sid)[1]["refund_txid"]
    tx = await node.call("getrawtransaction", refund, True)
    assert tx["locktime"] == init["locktime"] and tx["vin"][0]["sequence"] == 0xFFFFFFFE
    await node.mine(1)
    events = [e for e in shop.poll() if e["kind"].startswith("swap_")]
    assert [(e["kind"], e["state"]) for e in events] == [("swap_refunded", "COMPLETED")]
    shown = swap(shop, "show", sid)[1]
    assert shown["state"] == "COMPLETED" and shown["refund_txid"] == refund
    assert swap_kinds(shop.poll()) == []


async def test_a_refund_the_node_refuses_is_not_recorded_and_a_good_one_follows(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(3_000_000,), KACCY_SWAP_AUTO_REFUND="off")
    cp = await Counterparty.make(node)
    init = swap(shop, "initiate", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "2500000",
                "--receive-sat", "40000", "--timeout-blocks", "2", "--fee-rate", "2")[1]
    sid = init["swap_id"]
    await node.mine(init["locktime"] - await tip(node))
    # Above the node's maxfeerate (0.1 BTC/kvB): the node refuses it, an outside failure.
    status, out = swap(shop, "refund", sid, "--fee-rate", "12000", check=False)
    assert status == 1 and out["error"]["code"] == "rejected_by_node", out
    assert swap(shop, "show", sid)[1]["refund_txid"] is None   # nothing recorded, nothing to re-send
    done = swap(shop, "refund", sid, "--fee-rate", "2")[1]
    assert done["refund_txid"] in await node.call("getrawmempool")
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_locked", "swap_refunded"]
    assert swap(shop, "show", sid)[1]["state"] == "REFUNDED"


class HoldingProxy:
    """The node's RPC as a killed monitor sees it: every call is passed on, except that once
    `after` was called, the first `hold` call never answers (the process is then killed -9 while
    it waits: a deterministic point between two steps of one poll)."""

    def __init__(self, target: str, after: str, hold: str) -> None:
        self.target, self.after, self.hold = target, after, hold
        self.armed, self.holding, self.release = False, threading.Event(), threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                parsed = json.loads(body)
                methods = [c["method"] for c in (parsed if isinstance(parsed, list) else [parsed])]
                if proxy.armed and proxy.hold in methods and not proxy.holding.is_set():
                    proxy.holding.set()
                    proxy.release.wait(60)
                    return
                if proxy.after in methods:
                    proxy.armed = True
                request = urllib.request.Request(proxy.target + self.path, data=body, method="POST", headers={
                    "Content-Type": "application/json", "Authorization": self.headers["Authorization"]})
                try:
                    with urllib.request.urlopen(request, timeout=60) as r:
                        status, answer = r.status, r.read()
                except urllib.error.HTTPError as err:
                    status, answer = err.code, err.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("hold", ["getmempoolinfo", "sendrawtransaction"])
async def test_a_monitor_killed_9_between_the_secret_and_the_redeem_redeems_once(node, tmp_path, hold) -> None:  # noqa: ANN001
    """A real `kaccy-bitcoin monitor` process, SIGKILLed after it read the secret from the
    chain: before its redeem was built (it waits on the fee rate), or once it was recorded (it
    waits on sendrawtransaction). The next poll redeems; one redeem only, each event once."""
    shop, cp, sid, part = await participant_locked(node, tmp_path)
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_locked"]
    script2 = htlc_script(cp.payment_hash, cp.pub, bytes.fromhex(part["our_pubkey"]), part["locktime"])
    claim = await cp.spend(script2, part["funding_txid"], part["funding_vout"], 40_000, preimage=cp.preimage)
    claim_txid = await node.call("sendrawtransaction", claim.hex())

    proxy = HoldingProxy(node.node.url, after="gettxspendingprevout", hold=hold)
    proc = subprocess.Popen([CLI, "monitor", "--interval", "0.2"], env={**shop.env, "KACCY_BITCOIN_RPC_URL": proxy.url},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.holding.wait(60), "the monitor never reached the redeem"
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proxy.close()
    seen = swap(shop, "show", sid)[1]
    assert seen["preimage"] == cp.preimage.hex()
    recorded = seen["redeem_txid"]
    assert (recorded is not None) == (hold == "sendrawtransaction")
    mempool = await node.call("getrawmempool")
    assert recorded not in mempool and [t for t in mempool if t != claim_txid] == []

    events = shop.poll()
    assert swap_kinds(events) == ([] if recorded else ["swap_redeemed"])
    redeem = swap(shop, "show", sid)[1]["redeem_txid"]
    assert redeem in await node.call("getrawmempool") and redeem == (recorded or redeem)
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_completed"]
    assert swap_kinds(shop.poll()) == []
    audit = [e["kind"] for e in shop.cli("events", "--limit", "1000")[1]["events"] if e.get("subject") == sid]
    assert audit == ["swap_initiated", "swap_funded", "swap_locked", "swap_preimage_revealed", "swap_redeemed",
                     "swap_completed"]
    spends = [tx for tx in (await node.call("getblock", await node.call("getbestblockhash"), 2))["tx"]
              if any(i.get("txid") == part["counter"]["txid"] for i in tx["vin"])]
    assert [tx["txid"] for tx in spends] == [redeem]
