"""Withdrawals end to end on the real regtest node, through the CLI contract."""
from __future__ import annotations

import asyncio
import subprocess
from decimal import Decimal

import pytest

from tests.payments_harness import CLI, Shop

pytestmark = pytest.mark.node


async def funded_shop(node, tmp_path, amounts=(200_000, 300_000, 500_000), **settings) -> Shop:  # noqa: ANN001
    shop = Shop(node, tmp_path, **settings)
    shop.env["KACCY_SIGNER_MNEMONIC"] = shop.words
    for n, amount in enumerate(amounts):
        address = shop.order(f"fund-{n}", amount)["address"]
        await node.send(address, amount)
    await node.mine(1)
    # The node hands blocks to its wallets asynchronously: a poll while the shop's watch wallet
    # is a block behind leaves the payments of that block to the next poll (the monitor concludes
    # nothing from a lagging wallet, see tests/test_monitor_wallet_lag.py), too late for a test
    # that spends every coin at once. Wait for what the monitor itself checks.
    await wallet_caught_up(node, shop.env["KACCY_BITCOIN_RPC_WALLET"])
    events = shop.poll()
    for n, amount in enumerate(amounts):
        shown = shop.show(f"fund-{n}")
        assert shown["received_sat"] == amount, f"fund-{n} not seen by the first poll: {shown}, events {events}"
    return shop


async def wallet_caught_up(node, wallet: str, within: float = 30.0) -> None:  # noqa: ANN001
    """Until the wallet has taken in the node's best block (getwalletinfo's lastprocessedblock)."""
    await node.call("syncwithvalidationinterfacequeue")
    deadline = asyncio.get_running_loop().time() + within
    while True:
        best = await node.call("getbestblockhash")
        processed = (await node.call("getwalletinfo", wallet=wallet))["lastprocessedblock"]["hash"]
        if processed == best:
            return
        assert asyncio.get_running_loop().time() < deadline, f"wallet {wallet} stayed at {processed}, tip {best}"
        await asyncio.sleep(0.02)


async def test_single_withdrawal_signed_broadcast_confirmed_and_seen_by_monitor(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path)
    dest = await node.call("getnewaddress", wallet="miner")
    created = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "150000", "--fee-rate", "3")[1]
    assert set(created) == {"withdrawal_id", "psbt", "fee_sat", "inputs", "outputs", "state", "risk"}
    assert created["state"] == "created"
    ins = sum(i["amount_sat"] for i in created["inputs"])
    outs = sum(o["amount_sat"] for o in created["outputs"])
    assert ins == outs + created["fee_sat"]
    assert [o for o in created["outputs"] if not o["change"]] == [{"address": dest, "amount_sat": 150_000,
                                                                    "change": False}]
    decoded = await node.call("decodepsbt", created["psbt"])
    assert all(i["sequence"] == 0xFFFFFFFD for i in decoded["tx"]["vin"])          # RBF signalled
    assert decoded["tx"]["locktime"] == await node.call("getblockcount")          # anti-fee-sniping
    assert all("witness_utxo" in i and i["bip32_derivs"] for i in decoded["inputs"])
    analyzed = await node.call("analyzepsbt", created["psbt"])
    assert analyzed["next"] == "signer"

    wid = created["withdrawal_id"]
    signed = shop.cli("withdraw", "sign", wid, "--signer", "software")[1]
    assert signed["state"] == "signed"
    sent = shop.cli("withdraw", "broadcast", wid)[1]
    assert sent["state"] == "broadcast" and len(sent["txid"]) == 64
    assert sent["txid"] in await node.call("getrawmempool")
    await node.mine(1)
    shown = shop.cli("withdraw", "show", wid)[1]
    assert (shown["txid"], shown["confirmations"], shown["state"]) == (sent["txid"], 1, "broadcast")
    tx = await node.call("gettransaction", sent["txid"], wallet="miner")
    assert tx["amount"] == Decimal("0.0015")
    events = shop.poll()   # seen back as outgoing; the change is ours, not an unknown payment
    assert [(e["kind"], e["subject"]) for e in events
            if e["kind"] in ("withdrawal_confirmed", "payment_to_unknown_address", "unexpected_spend")] == [
        ("withdrawal_confirmed", wid)]
    assert shop.poll() == []


async def test_batch_withdrawal_pays_every_output(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path)
    a, b, c = [await node.call("getnewaddress", wallet="miner") for _ in range(3)]
    created = shop.cli("withdraw", "create", "--to", a, "--amount-sat", "10000", "--to", b, "--amount-sat",
                       "20000", "--to", c, "--amount-sat", "30000")[1]
    paid = {o["address"]: o["amount_sat"] for o in created["outputs"] if not o["change"]}
    assert paid == {a: 10_000, b: 20_000, c: 30_000}
    shop.cli("withdraw", "sign", created["withdrawal_id"], "--signer", "software")
    txid = shop.cli("withdraw", "broadcast", created["withdrawal_id"])[1]["txid"]
    await node.mine(1)
    decoded = await node.call("getrawtransaction", txid, True)
    assert decoded["confirmations"] == 1 and len(decoded["vout"]) in (3, 4)


async def test_refusals(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(100_000,))
    dest = await node.call("getnewaddress", "", "bech32", wallet="miner")
    rc, out = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "5000000", check=False)
    assert rc == 2 and out["error"]["code"] == "insufficient_funds" and "missing" in out["error"]["message"]
    rc, out = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "100", check=False)
    assert rc == 2 and out["error"]["code"] == "dust_output" and "294" in out["error"]["message"]
    for bad_amount in ("0", "-5"):
        rc, out = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", bad_amount, check=False)
        assert rc == 2 and out["error"]["code"] == "invalid_amount"
    for bad_address in ("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", "bcrt1qnotanaddress"):
        rc, out = shop.cli("withdraw", "create", "--to", bad_address, "--amount-sat", "10000", check=False)
        assert rc == 2 and out["error"]["code"] == "invalid_address"
    rc, out = shop.cli("withdraw", "show", "nope", check=False)
    assert rc == 2 and out["error"]["code"] == "not_found"


async def test_reserved_coins_are_not_picked_twice_and_cancel_releases(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000, 200_000))
    dest = await node.call("getnewaddress", wallet="miner")
    # Above the long-term fee rate every extra input is waste, and one coin covers the payout
    # plus the minimum change (50,000 sat, as Core): each withdrawal takes one coin.
    high = ("--fee-rate", "20")
    first = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", *high)[1]
    second = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", *high)[1]
    used_first = {(i["txid"], i["vout"]) for i in first["inputs"]}
    used_second = {(i["txid"], i["vout"]) for i in second["inputs"]}
    assert used_first and used_second and not used_first & used_second
    rc, out = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", *high, check=False)
    assert rc == 2 and out["error"]["code"] == "insufficient_funds"
    assert shop.cli("withdraw", "cancel", first["withdrawal_id"])[1] == {
        "withdrawal_id": first["withdrawal_id"], "state": "rejected"}
    third = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000", *high)[1]
    assert {(i["txid"], i["vout"]) for i in third["inputs"]} == used_first


async def test_two_processes_at_once_never_share_a_coin(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,) * 4)
    dest = await node.call("getnewaddress", wallet="miner")
    args = [CLI, "withdraw", "create", "--to", dest, "--amount-sat", "60000", "--fee-rate", "20"]
    procs = [subprocess.Popen(args, env=shop.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    import json

    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    made = [r for r in results if "withdrawal_id" in r]
    assert len(made) >= 2
    coins = [(i["txid"], i["vout"]) for r in made for i in r["inputs"]]
    assert len(coins) == len(set(coins))
    for r in results:
        assert "withdrawal_id" in r or r["error"]["code"] in ("insufficient_funds", "coins_reserved")


async def test_cancel_is_refused_once_broadcast_and_bump_replaces(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path)
    dest = await node.call("getnewaddress", wallet="miner")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "120000", "--fee-rate", "1")[1]
    shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software")
    old_txid = shop.cli("withdraw", "broadcast", w["withdrawal_id"])[1]["txid"]
    rc, out = shop.cli("withdraw", "cancel", w["withdrawal_id"], check=False)
    assert rc == 2 and "bump" in out["error"]["message"]
    bumped = shop.cli("withdraw", "bump", w["withdrawal_id"], "--fee-rate", "5")[1]
    assert bumped["replaces"] == w["withdrawal_id"] and bumped["state"] == "created"
    assert bumped["fee_sat"] > w["fee_sat"]
    assert {(i["txid"], i["vout"]) for i in w["inputs"]} <= {(i["txid"], i["vout"]) for i in bumped["inputs"]}
    assert [o for o in bumped["outputs"] if not o["change"]] == [o for o in w["outputs"] if not o["change"]]
    shop.cli("withdraw", "sign", bumped["withdrawal_id"], "--signer", "software")
    new_txid = shop.cli("withdraw", "broadcast", bumped["withdrawal_id"])[1]["txid"]
    mempool = await node.call("getrawmempool")
    assert new_txid in mempool and old_txid not in mempool
    await node.mine(1)
    assert shop.cli("withdraw", "show", bumped["withdrawal_id"])[1]["confirmations"] == 1
    assert shop.cli("withdraw", "show", w["withdrawal_id"])[1]["replaced_by"] == bumped["withdrawal_id"]


async def hot_wallet(node, shop: Shop) -> str:  # noqa: ANN001
    """A node wallet holding the shop's private keys (what `--signer core` signs with)."""
    from bip_utils import Base58Decoder, Base58Encoder, Bip39SeedGenerator, Bip84, Bip84Coins

    hot = f"hot-{shop.vpub[-6:]}"
    await node.call("createwallet", hot, False, True)
    seed = Bip39SeedGenerator(shop.words).Generate()
    vprv = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PrivateKey().ToExtended()
    tprv = Base58Encoder.CheckEncode(bytes.fromhex("04358394") + Base58Decoder.CheckDecode(vprv)[4:])
    descs = []
    for chain in (0, 1):
        info = await node.call("getdescriptorinfo", f"wpkh({tprv}/{chain}/*)")
        descs.append({"desc": f"wpkh({tprv}/{chain}/*)#{info['checksum']}", "range": [0, 100],
                      "timestamp": 0, "active": True, "internal": chain == 1})
    assert all(r["success"] for r in await node.call("importdescriptors", descs, wallet=hot))
    return hot


async def test_a_rejected_broadcast_keeps_its_coins_until_the_chain_settles_the_rival(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,))
    hot = await hot_wallet(node, shop)
    dest = await node.call("getnewaddress", wallet="miner")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000")[1]
    shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software")
    rival = await node.call("sendall", [dest], wallet=hot)   # the same coin leaves by another road
    # ... and is mined: while the rival only sits in the mempool, full RBF lets ours replace it
    # whenever our fee is higher (it is, once the node has fee estimates from earlier tests).
    await node.mine(1)
    rc, out = shop.cli("withdraw", "broadcast", w["withdrawal_id"], check=False)
    assert rc == 1 and out["error"]["code"] == "rejected_by_node" and "stay held" in out["error"]["message"]
    shown = shop.cli("withdraw", "show", w["withdrawal_id"])[1]
    assert shown["state"] == "rejected" and "rejected by the node" in shown["reject_reason"]
    assert held(shop) == {(i["txid"], i["vout"]) for i in w["inputs"]}   # signed: held until the chain settles
    events = shop.poll()
    conflicted = [e for e in events if e["kind"] == "withdrawal_conflicted"]
    assert [(e["subject"], e["conflicting_txid"]) for e in conflicted] == [(w["withdrawal_id"], rival["txid"])]
    assert [e["subject"] for e in events if e["kind"] == "unexpected_spend"] == [rival["txid"]]
    await node.mine(5)
    shop.poll()
    assert shop.cli("withdraw", "show", w["withdrawal_id"])[1]["state"] == "conflicted"
    assert held(shop) == set()   # the rival is final: nothing left to hold


def held(shop: Shop) -> set[tuple[str, int]]:
    """The coins the shop's database holds for withdrawals."""
    from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine

    engine = make_engine(shop.env["KACCY_DATABASE_URL"])
    try:
        with SqlUnitOfWorkFactory(engine)() as u:
            return {(op.txid.value, op.vout) for op in u.reservations.reserved()}
    finally:
        engine.dispose()


async def test_core_signs_our_psbt_and_we_finalize(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path)
    hot = await hot_wallet(node, shop)
    shop.env["KACCY_SIGNER_CORE_WALLET"] = hot
    del shop.env["KACCY_SIGNER_MNEMONIC"]
    dest = await node.call("getnewaddress", wallet="miner")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "70000")[1]
    assert shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "core")[1]["state"] == "signed"
    txid = shop.cli("withdraw", "broadcast", w["withdrawal_id"])[1]["txid"]
    assert txid in await node.call("getrawmempool")
    # The keys also sit in the node's hot wallet: a spend made there, not through a
    # withdrawal, is an unexpected spend the monitor reports.
    shop.poll()
    rogue = await node.call("sendtoaddress", dest, "0.001", wallet=hot)
    await node.settle()
    events = shop.poll()
    assert [(e["kind"], e["subject"]) for e in events if e["kind"] == "unexpected_spend"] == [
        ("unexpected_spend", rogue)]


async def test_unbroadcast_withdrawal_expires_and_releases_its_coins(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, amounts=(200_000,), KACCY_WITHDRAWAL_TTL="0")
    dest = await node.call("getnewaddress", wallet="miner")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000")[1]
    events = shop.poll()
    assert [(e["kind"], e["subject"]) for e in events if e["kind"] == "withdrawal_expired"] == [
        ("withdrawal_expired", w["withdrawal_id"])]
    shown = shop.cli("withdraw", "show", w["withdrawal_id"])[1]
    assert shown["state"] == "expired" and shown["reject_reason"] == "expired before signing"
    again = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000")[1]
    assert again["inputs"] == w["inputs"]


async def test_signer_words_for_another_account_refuse_to_start(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    other_words, _ = node.fresh_vpub()
    shop.env["KACCY_SIGNER_MNEMONIC"] = other_words
    rc, out = shop.cli("order", "show", "x", check=False)
    assert rc != 0 and out["error"]["code"] == "signer_key_mismatch"


async def test_cpfp_lifts_a_low_fee_parent(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path)
    dest = await node.call("getnewaddress", wallet="miner")
    parent = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "100000", "--fee-rate", "1")[1]
    shop.cli("withdraw", "sign", parent["withdrawal_id"], "--signer", "software")
    parent_txid = shop.cli("withdraw", "broadcast", parent["withdrawal_id"])[1]["txid"]
    child = shop.cli("withdraw", "cpfp", parent["withdrawal_id"], "--fee-rate", "20")[1]
    assert child["child_of"] == parent["withdrawal_id"]
    assert child["inputs"][0]["txid"] == parent_txid
    shop.cli("withdraw", "sign", child["withdrawal_id"], "--signer", "software")
    child_txid = shop.cli("withdraw", "broadcast", child["withdrawal_id"])[1]["txid"]
    entry = await node.call("getmempoolentry", parent_txid)
    package_rate = Decimal(entry["fees"]["descendant"]) * 100_000_000 / entry["descendantsize"]
    assert package_rate >= Decimal("19.5"), package_rate
    await node.mine(1)
    for wid in (parent["withdrawal_id"], child["withdrawal_id"]):
        assert shop.cli("withdraw", "show", wid)[1]["confirmations"] == 1
    assert child_txid


async def test_evicted_withdrawal_is_rebroadcast_and_a_stuck_one_alerts(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path, KACCY_REBROADCAST_DELAY="0", KACCY_STUCK_AFTER="0")
    dest = await node.call("getnewaddress", wallet="miner")
    tip = await node.call("getbestblockhash")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "80000")[1]
    shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software")
    txid = shop.cli("withdraw", "broadcast", w["withdrawal_id"])[1]["txid"]
    # Its anti-fee-sniping locktime is the current tip: take that block away and the
    # transaction is not final for the next block, so the mempool drops it.
    await node.call("invalidateblock", tip)
    await node.settle()
    assert txid not in await node.call("getrawmempool")
    events = shop.poll()                       # the monitor's tick tries (non-final: not yet accepted)
    assert [e["kind"] for e in events if e["kind"] == "withdrawal_stuck"] == ["withdrawal_stuck"]
    await node.call("reconsiderblock", tip)    # the chain moves on; now it is final again
    await node.settle()
    shop.poll()
    assert txid in await node.call("getrawmempool")
    assert all(e["kind"] != "withdrawal_stuck" for e in shop.poll())   # alerted once


async def test_batch_rbf_adds_payouts_to_a_pending_batch(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path)
    a, b = [await node.call("getnewaddress", "", "bech32", wallet="miner") for _ in range(2)]
    w = shop.cli("withdraw", "create", "--to", a, "--amount-sat", "40000", "--fee-rate", "2")[1]
    shop.cli("withdraw", "sign", w["withdrawal_id"], "--signer", "software")
    old_txid = shop.cli("withdraw", "broadcast", w["withdrawal_id"])[1]["txid"]
    bumped = shop.cli("withdraw", "bump", w["withdrawal_id"], "--fee-rate", "6", "--to", b, "--amount-sat", "30000")[1]
    paid = {o["address"]: o["amount_sat"] for o in bumped["outputs"] if not o["change"]}
    assert paid == {a: 40_000, b: 30_000} and bumped["replaces"] == w["withdrawal_id"]
    shop.cli("withdraw", "sign", bumped["withdrawal_id"], "--signer", "software")
    new_txid = shop.cli("withdraw", "broadcast", bumped["withdrawal_id"])[1]["txid"]
    mempool = await node.call("getrawmempool")
    assert new_txid in mempool and old_txid not in mempool
    await node.mine(1)
    tx = await node.call("getrawtransaction", new_txid, True)
    assert {v["scriptPubKey"].get("address") for v in tx["vout"]} >= {a, b}
