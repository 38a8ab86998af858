"""One withdrawal never stops the monitor for the others (issue 17, points 1 and 13), through the
CLI on the real regtest node.

A withdrawal created here, signed by a node wallet and sent with `sendrawtransaction`, is
adopted by the monitor as `broadcast` while its PSBT here stays unsigned. To make its
transaction leave the mempool, the test disconnects the block its locktime names: the
transaction is no longer final, the node evicts it, and reconnecting the block does not bring
it back (it was never in a block)."""
from __future__ import annotations

import pytest

from tests.payments_harness import Shop, kinds
from tests.test_withdrawals_regtest import funded_shop, hot_wallet

pytestmark = pytest.mark.node


async def sent_elsewhere(node, shop: Shop, hot: str, amount: int) -> tuple[str, str]:  # noqa: ANN001
    """A withdrawal created here, signed and sent by the node's hot wallet: (id, txid)."""
    dest = await node.call("getnewaddress", wallet="miner")
    created = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", str(amount), "--fee-rate", "5")[1]
    processed = await node.call("walletprocesspsbt", created["psbt"], True, "ALL", True, True, wallet=hot)
    return created["withdrawal_id"], await node.call("sendrawtransaction", processed["hex"])


async def evict(node, *txids: str) -> None:  # noqa: ANN001
    """Make the node's mempool lose `txids` (not yet in any block)."""
    locktime = min([(await node.call("getrawtransaction", t, True))["locktime"] for t in txids])
    block = await node.call("getblockhash", locktime)
    await node.call("invalidateblock", block)       # the transactions are not final below their locktime
    await node.call("reconsiderblock", block)
    await node.settle()
    mempool = set(await node.call("getrawmempool"))
    assert not mempool & set(txids)


def forget_kept_transaction(shop: Shop, withdrawal_id: str) -> None:
    """As a withdrawal adopted before signed transactions were kept is stored."""
    from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine

    engine = make_engine(shop.env["KACCY_DATABASE_URL"])
    try:
        with SqlUnitOfWorkFactory(engine)() as u:
            w = u.withdrawals.get(withdrawal_id)
            if getattr(w, "signed_tx", None) is not None:
                w.signed_tx = None
                u.withdrawals.save(w)
                u.commit()
    finally:
        engine.dispose()


async def test_an_adopted_withdrawal_the_mempool_lost_is_resubmitted_and_a_bad_one_stops_nothing(
        node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 150_000))
    shop.env["KACCY_REBROADCAST_DELAY"] = "0"
    hot = await hot_wallet(node, shop)
    lost, lost_txid = await sent_elsewhere(node, shop, hot, 60_000)
    bad, bad_txid = await sent_elsewhere(node, shop, hot, 40_000)
    await node.settle()
    adopted = shop.poll()
    assert {(e["subject"], e["txid"]) for e in adopted if e["kind"] == "withdrawal_broadcast"} == {
        (lost, lost_txid), (bad, bad_txid)}

    # `bad` was adopted before this release kept transactions, and its node forgot it: nothing
    # here can resubmit it. `lost` only left the mempool.
    forget_kept_transaction(shop, bad)
    await evict(node, lost_txid, bad_txid)
    await node.call("removeprunedfunds", bad_txid, wallet=shop.env["KACCY_BITCOIN_RPC_WALLET"])
    late = shop.order("after-eviction", 25_000)
    await node.send(late["address"], 25_000)

    rc, out = shop.cli("monitor", "--once")
    assert rc == 0
    assert ("payment_detected", "after-eviction") in [(e["kind"], e["subject"]) for e in out["events"]]
    assert lost_txid in await node.call("getrawmempool")            # resubmitted as the network saw it
    assert shop.cli("withdraw", "show", lost)[1]["state"] == "broadcast"
    assert [(f["phase"], f["item"]) for f in out["failed"]] == [("withdrawals", bad)]
    assert out["failed"][0]["code"] and out["failed"][0]["message"]
    alerts = [e for e in out["events"] if e["kind"] == "monitor_item_failed"]
    assert [(a["subject"], a["phase"], a["item"]) for a in alerts] == [(bad, "withdrawals", bad)]

    # The next poll skips it again, says so, and does not alert again (nor would a restart).
    await node.mine(1)
    rc, out = shop.cli("monitor", "--once")
    assert rc == 0 and [(f["phase"], f["item"]) for f in out["failed"]] == [("withdrawals", bad)]
    assert "monitor_item_failed" not in kinds(out["events"])
    assert ("withdrawal_confirmed", lost) in [(e["kind"], e["subject"]) for e in out["events"]]
    assert ("payment_confirmed", "after-eviction") in [(e["kind"], e["subject"]) for e in out["events"]]
    every = shop.cli("events", "--limit", "1000")[1]["events"]
    assert [e["subject"] for e in every if e["kind"] == "monitor_item_failed"] == [bad]


async def test_a_phase_that_fails_stops_no_other_and_monitor_once_exits_1(node, tmp_path, fake) -> None:  # noqa: ANN001
    # Many small coins and low fees: the last phase, the consolidation proposal, has work to do.
    shop = await funded_shop(node, tmp_path, amounts=(20_000, 30_000, 40_000), KACCY_FALLBACK_FEE_RATE="1",
                             KACCY_LONG_TERM_FEE_RATE="5000", KACCY_LND_REST_URL=fake.rest_url,
                             KACCY_LND_MACAROON=fake.info["macaroon"], KACCY_LND_TLS_CERT=fake.info["tls_cert"])
    shop.order("ln-1", 50_000)
    shop.cli("ln", "invoice", "create", "ln-1", "--amount-msat", "50000000", "--expiry", "600")
    # LND now refuses us (a wrong macaroon): the Lightning phase fails as a whole.
    wrong = tmp_path / "wrong.macaroon"
    wrong.write_bytes(b"\x01" * 32)
    shop.env["KACCY_LND_MACAROON"] = str(wrong)
    shop.env["KACCY_CONSOLIDATE_ABOVE"] = "2"
    late = shop.order("late", 25_000)
    await node.send(late["address"], 25_000)

    rc, out = shop.cli("monitor", "--once", check=False)
    assert rc == 1, out                                     # the poll failed: outside, never 2
    error = out["error"]
    assert error["code"] == "lnd_auth_failed" and "lightning" in error["message"]
    assert [(f["phase"], f["item"], f["code"]) for f in error["failed"]] == [("lightning", None, "lnd_auth_failed")]
    done = [(e["kind"], e["subject"]) for e in error["events"]]
    assert ("payment_detected", "late") in done                                 # before the failed phase
    assert ("consolidation_proposed", "default") in done                        # and after it
    assert ("monitor_item_failed", "lightning") in done
    assert shop.show("late")["received_sat"] == 25_000

    rc, out = shop.cli("monitor", "--once", check=False)
    assert rc == 1 and "monitor_item_failed" not in kinds(out["error"]["events"])   # alerted once
    shop.env["KACCY_LND_MACAROON"] = fake.info["macaroon"]
    rc, out = shop.cli("monitor", "--once")
    assert out["failed"] == []
