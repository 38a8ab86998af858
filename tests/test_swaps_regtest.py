"""Atomic swaps on the regtest node through the CLI, against a counterparty with its own key
and wallet (tests/swap_counterparty.py): both roles to COMPLETED, refunds by hand and by the
monitor, the refusals with nothing spent, what the node refuses on our lock."""
from __future__ import annotations

import os
from decimal import Decimal

import pytest
from bitcointx.core.key import CKey

from tests.payments_harness import Shop, kinds
from tests.swap_counterparty import Counterparty, htlc_script, sha256
from tests.test_withdrawals_regtest import funded_shop

pytestmark = pytest.mark.node

VIEW_KEYS = {"swap_id", "role", "state", "payment_hash", "preimage", "our_pubkey", "counterparty_pubkey", "locktime",
             "witness_script", "htlc_address", "amount_sat", "receive_sat", "funding_txid", "funding_vout",
             "redeem_txid", "refund_txid", "counter"}


def swap(shop: Shop, *args: str, check: bool = True) -> tuple[int, dict]:
    return shop.cli("swap", *args, check=check)


def refused(shop: Shop, *args: str) -> dict:
    status, out = swap(shop, *args, check=False)
    assert status == 2, out
    return out["error"]


def swap_kinds(events: list[dict]) -> list[str]:
    return [k for k in kinds(events) if k.startswith("swap_")]


async def tip(node) -> int:  # noqa: ANN001
    return await node.call("getblockcount")


async def test_initiator_locks_redeems_and_completes(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(300_000,))
    cp = await Counterparty.make(node)
    height = await tip(node)
    init = swap(shop, "initiate", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "50000",
                "--receive-sat", "40000", "--timeout-blocks", "30", "--fee-rate", "2")[1]
    assert set(init) == VIEW_KEYS and init["role"] == "initiator" and init["state"] == "INITIATED"
    assert init["locktime"] == height + 30 and init["preimage"] is None and init["counter"] is None
    our = bytes.fromhex(init["our_pubkey"])
    hash_ = bytes.fromhex(init["payment_hash"])
    script1 = htlc_script(hash_, cp.pub, our, init["locktime"])
    assert init["witness_script"] == bytes(script1).hex()
    assert init["funding_txid"] in await node.call("getrawmempool")
    out = await node.call("gettxout", init["funding_txid"], init["funding_vout"], True)
    assert out["scriptPubKey"]["address"] == init["htlc_address"] and out["value"] == Decimal("0.0005")
    created = [e for e in shop.cli("events", "--limit", "1000")[1]["events"] if e["kind"] == "withdrawal_created"]
    assert [e["withdrawal_kind"] for e in created] == ["swap"]   # through the transaction manager

    await node.mine(1)
    assert "swap_locked" in kinds(shop.poll())
    assert swap(shop, "show", init["swap_id"])[1]["state"] == "LOCKED"
    error = refused(shop, "refund", init["swap_id"])
    assert error["code"] == "timelock_not_reached" and error["locktime"] == init["locktime"]
    assert error["height"] == await tip(node)

    # The participant locks HTLC2 for us; we redeem it with the secret.
    locktime2 = await tip(node) + 10
    script2 = htlc_script(hash_, our, cp.pub, locktime2)
    txid2, vout2 = await cp.lock(script2, 45_000)
    counter = ("--counter-txid", txid2, "--counter-vout", str(vout2), "--counter-script", bytes(script2).hex())
    assert refused(shop, "redeem", init["swap_id"])["code"] == "usage"
    wrong = htlc_script(hash_, cp.pub, our, await tip(node) + 10)   # claimer and refunder swapped
    assert refused(shop, "redeem", init["swap_id"], "--counter-txid", txid2, "--counter-vout", str(vout2),
                   "--counter-script", bytes(wrong).hex())["code"] == "counter_script_mismatch"
    redeemed = swap(shop, "redeem", init["swap_id"], *counter, "--fee-rate", "2")[1]
    assert set(redeemed) == {"swap_id", "redeem_txid", "state"}
    claim = await node.call("getrawtransaction", redeemed["redeem_txid"], True)
    preimage = bytes.fromhex(claim["vin"][0]["txinwitness"][2])
    assert sha256(preimage) == hash_
    shown = swap(shop, "show", init["swap_id"])[1]
    assert shown["preimage"] == preimage.hex() and shown["counter"] == {
        "txid": txid2, "vout": vout2, "amount_sat": 45_000, "locktime": locktime2}
    await node.mine(1)
    events = shop.poll()
    assert "swap_completed" in kinds(events)
    assert swap(shop, "show", init["swap_id"])[1]["state"] == "COMPLETED"

    # The participant claims HTLC1: the node refuses a wrong preimage and a wrong key first.
    where = (init["funding_txid"], init["funding_vout"], 50_000)
    bad = await cp.spend(script1, *where, preimage=bytes(32))
    assert not (await cp.accepted(bad))["allowed"]
    bad_key = await cp.spend(script1, *where, preimage=preimage, key=CKey(os.urandom(32)))
    assert not (await cp.accepted(bad_key))["allowed"]
    good = await cp.spend(script1, *where, preimage=preimage)
    assert (await cp.accepted(good))["allowed"]
    await node.call("sendrawtransaction", good.hex())
    await node.mine(1)
    assert kinds(shop.poll()).count("swap_counterparty_claimed") == 1
    assert "swap_counterparty_claimed" not in kinds(shop.poll())
    assert swap(shop, "show", init["swap_id"])[1]["state"] == "COMPLETED"
    audit = shop.cli("events", "--limit", "1000")[1]["events"]
    swap_kinds = [e["kind"] for e in audit if e.get("subject") == init["swap_id"]]
    assert swap_kinds == ["swap_initiated", "swap_funded", "swap_locked", "swap_redeemed", "swap_completed",
                          "swap_counterparty_claimed"]


async def test_participant_checks_locks_learns_the_secret_and_completes(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(300_000,))
    cp = await Counterparty.make(node)
    acc = swap(shop, "accept", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "40000",
               "--receive-sat", "45000")[1]
    assert set(acc) == {"swap_id", "role", "state", "our_pubkey"} and acc["state"] == "INITIATED"
    sid, our = acc["swap_id"], bytes.fromhex(acc["our_pubkey"])
    other = swap(shop, "accept", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "40000",
                 "--receive-sat", "60000")[1]
    locktime1 = await tip(node) + 40
    script_o = htlc_script(cp.payment_hash, bytes.fromhex(other["our_pubkey"]), cp.pub, locktime1)
    txid_o, vout_o = await cp.lock(script_o, 50_000, mine=False)
    script1 = htlc_script(cp.payment_hash, our, cp.pub, locktime1)
    txid1, vout1 = await cp.lock(script1, 50_000)
    terms = ("--payment-hash", cp.payment_hash.hex())
    counter = ("--counter-txid", txid1, "--counter-vout", str(vout1), "--counter-script", bytes(script1).hex())
    mempool = set(await node.call("getrawmempool"))

    assert refused(shop, "participate", sid, "--payment-hash", "00" * 32, *counter)["code"] == \
        "counter_script_mismatch"
    assert refused(shop, "participate", sid, *terms, "--counter-txid", txid1, "--counter-vout", "7",
                   "--counter-script", bytes(script1).hex())["code"] == "counter_htlc_not_found"
    unsafe = refused(shop, "participate", sid, *terms, *counter, "--timeout-blocks", "35")
    assert unsafe["code"] == "unsafe_timeout" and unsafe["safety_blocks"] == 12
    assert unsafe["counter_locktime"] == locktime1 and unsafe["our_locktime"] == await tip(node) + 35
    low = refused(shop, "participate", other["swap_id"], *terms, "--counter-txid", txid_o, "--counter-vout",
                  str(vout_o), "--counter-script", bytes(script_o).hex(), "--timeout-blocks", "10")
    assert low["code"] == "counter_amount_too_low" and low["amount_sat"] == 50_000
    txid_u, vout_u = await cp.lock(script1, 50_000, mine=False)
    assert refused(shop, "participate", sid, *terms, "--counter-txid", txid_u, "--counter-vout", str(vout_u),
                   "--counter-script", bytes(script1).hex(), "--timeout-blocks", "10")["code"] == \
        "counter_htlc_unconfirmed"
    assert set(await node.call("getrawmempool")) == mempool | {txid_u}   # nothing of ours was sent
    assert swap(shop, "show", sid)[1]["funding_txid"] is None

    part = swap(shop, "participate", sid, *terms, *counter, "--timeout-blocks", "10", "--fee-rate", "2")[1]
    assert part["state"] == "INITIATED" and part["locktime"] == await tip(node) + 10
    script2 = htlc_script(cp.payment_hash, cp.pub, our, part["locktime"])
    assert part["witness_script"] == bytes(script2).hex()
    assert part["counter"] == {"txid": txid1, "vout": vout1, "amount_sat": 50_000, "locktime": locktime1}
    assert refused(shop, "redeem", sid)["code"] == "preimage_unknown"
    await node.mine(1)
    assert "swap_locked" in kinds(shop.poll())

    # The initiator claims HTLC2 (its claim built by the test): the monitor learns the secret
    # and redeems HTLC1 at once, then completes when that confirms.
    claim = await cp.spend(script2, part["funding_txid"], part["funding_vout"], 40_000, preimage=cp.preimage)
    await node.call("sendrawtransaction", claim.hex())
    events = shop.poll()
    assert swap_kinds(events) == ["swap_preimage_revealed", "swap_redeemed"]
    shown = swap(shop, "show", sid)[1]
    assert shown["preimage"] == cp.preimage.hex() and shown["redeem_txid"] in await node.call("getrawmempool")
    redeem = await node.call("getrawtransaction", shown["redeem_txid"], True)
    assert redeem["vin"][0]["txid"] == txid1
    await node.mine(1)
    assert "swap_completed" in kinds(shop.poll())
    assert swap(shop, "show", sid)[1]["state"] == "COMPLETED"
    assert swap_kinds(shop.poll()) == []   # nothing fires twice


async def test_refund_refused_before_the_locktime_then_confirmed(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(300_000,), KACCY_SWAP_AUTO_REFUND="off")
    cp = await Counterparty.make(node)
    init = swap(shop, "initiate", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "50000",
                "--receive-sat", "40000", "--timeout-blocks", "4", "--fee-rate", "2")[1]
    sid = init["swap_id"]
    await node.mine(1)
    assert "swap_locked" in kinds(shop.poll())
    error = refused(shop, "refund", sid)
    assert error == {**error, "code": "timelock_not_reached", "locktime": init["locktime"], "height": await tip(node)}
    assert [o for o in await node.call("getrawmempool")] == []
    # Our key on the claim branch, and the counterparty's on the refund branch: both refused.
    script1 = htlc_script(bytes.fromhex(init["payment_hash"]), cp.pub, bytes.fromhex(init["our_pubkey"]),
                          init["locktime"])
    await node.mine(init["locktime"] - await tip(node))
    wrong = await cp.spend(script1, init["funding_txid"], init["funding_vout"], 50_000, preimage=None,
                           locktime=init["locktime"])
    assert not (await cp.accepted(wrong))["allowed"]
    assert "swap_refund_broadcast" not in kinds(shop.poll())   # KACCY_SWAP_AUTO_REFUND=off
    done = swap(shop, "refund", sid)[1]
    assert set(done) == {"swap_id", "refund_txid", "state"} and done["state"] == "LOCKED"
    tx = await node.call("getrawtransaction", done["refund_txid"], True)
    assert tx["locktime"] == init["locktime"] and tx["vin"][0]["sequence"] < 0xFFFFFFFF
    assert swap(shop, "refund", sid)[1]["refund_txid"] == done["refund_txid"]   # the same one again
    await node.mine(1)
    assert "swap_refunded" in kinds(shop.poll())
    assert swap(shop, "show", sid)[1]["state"] == "REFUNDED"


async def test_the_monitor_refunds_by_itself_and_cancel(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(300_000,))
    cp = await Counterparty.make(node)
    init = swap(shop, "initiate", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "50000",
                "--receive-sat", "40000", "--timeout-blocks", "3", "--fee-rate", "2")[1]
    assert refused(shop, "cancel", init["swap_id"])["code"] == "not_cancellable"
    await node.mine(init["locktime"] - await tip(node))
    events = shop.poll()
    assert swap_kinds(events) == ["swap_locked", "swap_refund_broadcast"]
    refund = swap(shop, "show", init["swap_id"])[1]["refund_txid"]
    assert refund in await node.call("getrawmempool")
    assert "swap_refund_broadcast" not in kinds(shop.poll())
    await node.mine(1)
    assert "swap_refunded" in kinds(shop.poll())
    assert swap(shop, "list", "--state", "REFUNDED")[1]["swaps"][0]["refund_txid"] == refund

    acc = swap(shop, "accept", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "40000",
               "--receive-sat", "45000")[1]
    cancelled = swap(shop, "cancel", acc["swap_id"])[1]
    assert cancelled["state"] == "CANCELLED"
    assert refused(shop, "show", "nope")["code"] == "not_found"


async def test_swaps_need_the_signer_seed(node, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    cp = await Counterparty.make(node)
    for args in (("list",), ("accept", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "1000",
                              "--receive-sat", "1000")):
        assert refused(shop, *args)["code"] == "signer_required"


def balance(shop: Shop) -> int:
    default = next(w for w in shop.cli("wallet", "list")[1]["wallets"] if w["wallet"] == "default")
    return default["confirmed_sat"] + default["unconfirmed_sat"]


async def participant_locked(node, tmp_path, **settings: str) -> tuple[Shop, Counterparty, str, dict]:  # noqa: ANN001
    """A participant's swap whose HTLC2 is broadcast (not mined) against a confirmed HTLC1."""
    shop = await funded_shop(node, tmp_path, amounts=(300_000,), **settings)
    cp = await Counterparty.make(node)
    acc = swap(shop, "accept", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "40000",
               "--receive-sat", "45000")[1]
    script1 = htlc_script(cp.payment_hash, bytes.fromhex(acc["our_pubkey"]), cp.pub, await tip(node) + 40)
    txid1, vout1 = await cp.lock(script1, 50_000)
    part = swap(shop, "participate", acc["swap_id"], "--payment-hash", cp.payment_hash.hex(), "--counter-txid",
                txid1, "--counter-vout", str(vout1), "--counter-script", bytes(script1).hex(), "--timeout-blocks",
                "10", "--fee-rate", "2")[1]
    return shop, cp, acc["swap_id"], part


async def claim_our_lock(node, cp: Counterparty, part: dict) -> str:  # noqa: ANN001
    """The initiator's claim of our HTLC2, built by the test, sent."""
    script2 = htlc_script(cp.payment_hash, cp.pub, bytes.fromhex(part["our_pubkey"]), part["locktime"])
    claim = await cp.spend(script2, part["funding_txid"], part["funding_vout"], 40_000, preimage=cp.preimage)
    return await node.call("sendrawtransaction", claim.hex())


async def test_the_participant_redeems_by_hand_once_the_secret_is_on_chain(node, tmp_path) -> None:  # noqa: ANN001
    shop, cp, sid, part = await participant_locked(node, tmp_path)
    assert refused(shop, "redeem", sid)["code"] == "preimage_unknown"
    await node.mine(1)
    claim_txid = await claim_our_lock(node, cp, part)
    await node.mine(1)
    before = balance(shop)
    done = swap(shop, "redeem", sid, "--fee-rate", "3")[1]    # no monitor ran: the secret is read now
    assert done["redeem_txid"] in await node.call("getrawmempool")
    assert swap(shop, "redeem", sid)[1] == done                # the same redeem again
    shown = swap(shop, "show", sid)[1]
    assert shown["preimage"] == cp.preimage.hex() and shown["redeem_txid"] == done["redeem_txid"]
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_locked", "swap_completed"]
    redeem = await node.call("getrawtransaction", done["redeem_txid"], True)
    assert balance(shop) == before + int(Decimal(str(redeem["vout"][0]["value"])) * 100_000_000)   # our coins now
    audit = shop.cli("events", "--limit", "1000")[1]["events"]
    revealed = [e for e in audit if e["kind"] == "swap_preimage_revealed"]
    assert [(e["subject"], e["txid"]) for e in revealed] == [(sid, claim_txid)]


class Crash(BaseException):
    """The process dying (kill -9) at the point a test picks: nothing after it runs."""


async def test_a_crash_after_learning_the_secret_resends_the_same_redeem(node, tmp_path) -> None:  # noqa: ANN001
    import inspect

    shop, cp, sid, part = await participant_locked(node, tmp_path)
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_locked"]
    await claim_our_lock(node, cp, part)

    # One poll in this process, which dies the moment it would send the redeem.
    c = shop.container()
    try:
        chain = c.gateways.swap_chain()
        chain = await chain if inspect.isawaitable(chain) else chain

        async def die(raw: bytes) -> None:
            raise Crash

        chain.broadcast = die
        follow = c.services.follow_swaps()
        follow = await follow if inspect.isawaitable(follow) else follow
        with pytest.raises(Crash):
            await follow()
    finally:
        done = c.shutdown_resources()
        if inspect.isawaitable(done):
            await done
    recorded = swap(shop, "show", sid)[1]
    assert recorded["preimage"] == cp.preimage.hex() and recorded["redeem_txid"] is not None
    assert recorded["redeem_txid"] not in await node.call("getrawmempool")

    # The next poll sends that very transaction; no event fires twice.
    assert swap_kinds(shop.poll()) == []
    assert recorded["redeem_txid"] in await node.call("getrawmempool")
    await node.mine(1)
    assert swap_kinds(shop.poll()) == ["swap_completed"]
    assert swap(shop, "show", sid)[1]["redeem_txid"] == recorded["redeem_txid"]
    await node.mine(part["locktime"] - await tip(node))
    assert refused(shop, "refund", sid)["code"] == "htlc_already_spent"   # the initiator claimed it


async def test_a_lock_held_by_the_risk_review_is_not_sent_and_cancel_drops_it(node, tmp_path) -> None:  # noqa: ANN001
    shop = await funded_shop(node, tmp_path, amounts=(300_000,), KACCY_REVIEW_SCORE="0")
    cp = await Counterparty.make(node)
    init = swap(shop, "initiate", "--counterparty-pubkey", cp.pub.hex(), "--amount-sat", "50000",
                "--receive-sat", "40000", "--timeout-blocks", "30")[1]
    assert init["state"] == "INITIATED" and init["funding_txid"] is None
    assert swap_kinds(shop.poll()) == []
    cancelled = swap(shop, "cancel", init["swap_id"])[1]
    assert cancelled["state"] == "CANCELLED"
    audit = shop.cli("events", "--limit", "1000")[1]["events"]
    assert [e["kind"] for e in audit if e["kind"].startswith("withdrawal_")] == [
        "withdrawal_created", "withdrawal_held", "withdrawal_cancelled"]
    assert [e["kind"] for e in audit if e["subject"] == init["swap_id"]] == ["swap_initiated", "swap_cancelled"]
