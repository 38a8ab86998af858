"""Multisig wallets beside the default one, on the real regtest node, through the CLI contract:
a 2-of-3 P2WSH wallet of BIP48 keys, funded through an order, spent with the software signer's
signature combined with a node wallet's (a second cosigner's private descriptor)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid

import pytest
from bip_utils import Bip32KeyNetVersions, Bip32Secp256k1, Bip39SeedGenerator
from bitcointx import ChainParams
from bitcointx.core.key import CKey
from bitcointx.core.psbt import PartiallySignedTransaction

from tests.conftest import fresh_engine
from tests.payments_harness import CLI, Shop

pytestmark = pytest.mark.node

TEST_NET = Bip32KeyNetVersions(bytes.fromhex("043587cf"), bytes.fromhex("04358394"))
COSIGNER_B = "legal winner thank year wave sausage worth useful legal winner thank yellow"
COSIGNER_C = "letter advice cage absurd amount doctor acoustic avoid letter advice cage above"
BIP48_P2WSH = "m/48'/1'/0'/2'"
DATABASES = ["sqlite"] + (["postgresql"] if os.environ.get("KACCY_TEST_DATABASE_URL") else [])


def bip48_key(words: str) -> tuple[str, str]:
    """(public key expression with origin, private key expression with origin) of the BIP48
    P2WSH account 0 of `words` on test networks."""
    master = Bip32Secp256k1.FromSeed(Bip39SeedGenerator(words).Generate(), TEST_NET)
    account = master.DerivePath(BIP48_P2WSH)
    origin = f"[{master.FingerPrint().ToBytes().hex()}/48h/1h/0h/2h]"
    return origin + account.PublicKey().ToExtended(), origin + account.PrivateKey().ToExtended()


async def cosigner_wallet(node, keys: list[str], private: int) -> str:  # noqa: ANN001
    """A node wallet holding the 2-of-3 descriptors with `keys[private]` as a private key."""
    name = f"cosigner-{uuid.uuid4().hex[:10]}"
    await node.call("createwallet", name, False, True, "", False, True)
    requests = []
    for chain in (0, 1):
        desc = f"wsh(sortedmulti(2,{','.join(f'{k}/{chain}/*' for k in keys)}))"
        checksum = (await node.call("getdescriptorinfo", desc))["checksum"]
        requests.append({"desc": f"{desc}#{checksum}", "range": [0, 50], "timestamp": "now", "active": False})
    assert all(r["success"] for r in await node.call("importdescriptors", requests, wallet=name))
    return name


async def multisig_shop(node, tmp_path, **settings):  # noqa: ANN001, ANN201
    shop = Shop(node, tmp_path, **settings)
    shop.env["KACCY_SIGNER_MNEMONIC"] = shop.words
    keys = [bip48_key(shop.words), bip48_key(COSIGNER_B), bip48_key(COSIGNER_C)]
    return shop, keys


@pytest.mark.parametrize("database", DATABASES)
async def test_two_of_three_wallet_funded_signed_by_two_cosigners_broadcast_and_confirmed(node, tmp_path,
                                                                                         database) -> None:
    settings = {}
    if database == "postgresql":
        fresh_engine("postgresql", tmp_path).dispose()
        settings["KACCY_DATABASE_URL"] = os.environ["KACCY_TEST_DATABASE_URL"]
    shop, keys = await multisig_shop(node, tmp_path, **settings)
    public = [k[0] for k in keys]
    added = shop.cli("wallet", "add", "treasury", "--threshold", "2", *[a for k in public for a in ("--key", k)])[1]
    assert set(added) == {"wallet", "receive_descriptor", "change_descriptor", "first_address"}
    assert added["wallet"] == "treasury" and added["receive_descriptor"].startswith("wsh(sortedmulti(2,")
    assert (await node.call("deriveaddresses", added["receive_descriptor"], [0, 0]))[0] == added["first_address"]
    assert shop.cli("wallet", "add", "treasury", "--threshold", "2",
                    *[a for k in public for a in ("--key", k)])[1] == added          # the same again: the same
    rc, out = shop.cli("wallet", "add", "treasury", "--threshold", "3", *[a for k in public for a in ("--key", k)],
                       check=False)
    assert rc == 2 and out["error"]["code"] == "wallet_exists"

    order = shop.order("t-1", 1_000_000, "--wallet", "treasury")
    assert order["address"] == added["first_address"]
    assert shop.order("t-1", 1_000_000, "--wallet", "treasury") == order              # the same order again
    rc, out = shop.cli("order", "create", "t-1", "--amount-sat", "1000000", check=False)
    assert rc == 2 and out["error"]["code"] == "order_conflict"                       # bound to its wallet
    rc, out = shop.cli("order", "create", "x-1", "--amount-sat", "5000", "--wallet", "nope", check=False)
    assert rc == 2 and out["error"]["code"] == "unknown_wallet"
    for bad in (["--key", public[0].replace("/2h]", "/1h]")], ["--key", keys[1][1]], ["--key", public[2]]):
        rc, out = shop.cli("wallet", "add", "vault", "--threshold", "1", "--key", public[2], *bad, check=False)
        assert rc == 2 and out["error"]["code"] == "invalid_wallet", out
    default_order = shop.order("d-1", 100_000)
    assert default_order["address"] != order["address"]
    await node.send(order["address"], 1_000_000)
    await node.send(default_order["address"], 100_000)
    await node.mine(1)
    paid = {e["subject"] for e in shop.poll() if e["kind"] == "order_paid"}
    assert paid == {"t-1", "d-1"}
    listed = {w["wallet"]: w for w in shop.cli("wallet", "list")[1]["wallets"]}
    assert listed["treasury"] == {"wallet": "treasury", "policy": "2-of-3 p2wsh", "confirmed_sat": 1_000_000,
                                  "unconfirmed_sat": 0, "utxo_count": 1}
    assert listed["default"] == {"wallet": "default", "policy": "single-sig p2wpkh", "confirmed_sat": 100_000,
                                 "unconfirmed_sat": 0, "utxo_count": 1}

    dest = await node.call("getnewaddress", wallet="miner")
    created = shop.cli("withdraw", "create", "--wallet", "treasury", "--to", dest, "--amount-sat", "300000",
                       "--fee-rate", "2")[1]
    assert created["wallet"] == "treasury" and created["state"] == "created"
    assert [(i["amount_sat"]) for i in created["inputs"]] == [1_000_000]         # treasury's coin, not default's
    change = [o for o in created["outputs"] if o["change"]]
    change_desc = added["change_descriptor"]
    assert change and change[0]["address"] == (await node.call("deriveaddresses", change_desc, [0, 0]))[0]
    decoded = await node.call("decodepsbt", created["psbt"])
    assert decoded["inputs"][0]["witness_script"]["type"] == "multisig"
    assert len(decoded["inputs"][0]["bip32_derivs"]) == 3
    assert (await node.call("analyzepsbt", created["psbt"]))["next"] == "signer"
    wid = created["withdrawal_id"]

    signed = shop.cli("withdraw", "sign", wid, "--signer", "software")[1]
    assert signed["state"] == "partially_signed"
    rc, out = shop.cli("withdraw", "broadcast", wid, check=False)               # one signature cannot finalize
    assert rc == 2 and out["error"]["code"] == "invalid_withdrawal_state"

    cos_b = await cosigner_wallet(node, [keys[0][0], keys[1][1], keys[2][0]], 1)
    theirs = (await node.call("walletprocesspsbt", created["psbt"], True, "ALL", True, False, wallet=cos_b))["psbt"]

    # Refusals: a PSBT for another transaction, a key outside the set, a signature that does not verify.
    other = shop.cli("withdraw", "create", "--wallet", "default", "--to", dest, "--amount-sat", "20000")[1]
    rc, out = shop.cli("withdraw", "combine", wid, "--psbt", other["psbt"], check=False)
    assert rc == 2 and out["error"]["code"] == "psbt_mismatch"
    rc, out = shop.cli("withdraw", "combine", wid, "--psbt", with_stranger_signature(theirs), check=False)
    assert rc == 2 and out["error"]["code"] == "bad_signature"
    rc, out = shop.cli("withdraw", "combine", wid, "--psbt", with_broken_signature(theirs), check=False)
    assert rc == 2 and out["error"]["code"] == "bad_signature"
    assert shop.cli("withdraw", "show", wid)[1]["state"] == "partially_signed"

    combined = shop.cli("withdraw", "combine", wid, "--psbt", theirs)[1]
    assert combined["state"] == "signed"
    cos_c = await cosigner_wallet(node, [keys[0][0], keys[1][0], keys[2][1]], 2)
    third = (await node.call("walletprocesspsbt", created["psbt"], True, "ALL", True, False, wallet=cos_c))["psbt"]
    assert shop.cli("withdraw", "combine", wid, "--psbt", third)[1]["state"] == "signed"   # harmless

    sent = shop.cli("withdraw", "broadcast", wid)[1]
    assert sent["state"] == "broadcast" and sent["txid"] in await node.call("getrawmempool")
    await node.mine(1)
    events = shop.poll()
    assert ("withdrawal_confirmed", wid) in [(e["kind"], e["subject"]) for e in events]
    assert not [e for e in events if e["kind"] in ("unexpected_spend", "payment_to_unknown_address")]
    listed = {w["wallet"]: w for w in shop.cli("wallet", "list")[1]["wallets"]}
    assert listed["treasury"]["confirmed_sat"] == 1_000_000 - 300_000 - created["fee_sat"]
    assert listed["default"]["confirmed_sat"] == 100_000


async def test_core_signer_adds_a_cosigners_signature_and_custody_tiers_choose_the_wallet(node, tmp_path) -> None:
    shop, keys = await multisig_shop(node, tmp_path,
                                     KACCY_CUSTODY_TIERS="hot=default:150000,warm=treasury:5000000,cold=vault",
                                     KACCY_CUSTODY_TARGETS="hot=10,warm=90")
    shop.cli("wallet", "add", "treasury", "--threshold", "2", *[a for k in keys for a in ("--key", k[0])])
    await node.send(shop.order("t-1", 900_000, "--wallet", "treasury")["address"], 900_000)
    await node.send(shop.order("d-1", 300_000)["address"], 300_000)
    await node.mine(1)
    shop.poll()
    dest = await node.call("getnewaddress", wallet="miner")

    small = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "50000")[1]
    assert "wallet" not in small and small["inputs"][0]["amount_sat"] == 300_000    # hot: default
    large = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "200000")[1]
    assert large["wallet"] == "treasury"                                              # above hot's cap: warm
    rc, out = shop.cli("withdraw", "create", "--wallet", "default", "--to", dest, "--amount-sat", "200000",
                       check=False)
    assert rc == 2 and out["error"]["code"] == "tier_exceeded"
    shop.cli("withdraw", "cancel", small["withdrawal_id"])

    status = shop.cli("custody", "status")[1]
    assert status["total_sat"] == 1_200_000
    hot, warm, cold = status["tiers"]
    assert (hot["tier"], hot["wallet"], hot["balance_sat"], hot["target_sat"]) == ("hot", "default", 300_000, 120_000)
    assert (warm["balance_sat"], cold["balance_sat"], cold["target_pct"]) == (900_000, 0, None)
    (sweep,) = status["proposals"]
    assert sweep["action"] == "sweep" and (sweep["from_tier"], sweep["to_tier"]) == ("hot", "warm")
    assert sweep["withdrawal"] == {"wallet": "default", "to_wallet": "treasury", "amount_sat": 180_000}

    cos_b = await cosigner_wallet(node, [keys[0][0], keys[1][1], keys[2][0]], 1)
    shop.env["KACCY_SIGNER_CORE_WALLET"] = cos_b
    wid = large["withdrawal_id"]
    assert shop.cli("withdraw", "sign", wid, "--signer", "core")[1]["state"] == "partially_signed"
    assert shop.cli("withdraw", "sign", wid, "--signer", "software")[1]["state"] == "signed"
    txid = shop.cli("withdraw", "broadcast", wid)[1]["txid"]

    moved = shop.cli("withdraw", "create", "--wallet", "default", "--to-wallet", "treasury", "--amount-sat", "180000")[1]
    shop.cli("withdraw", "sign", moved["withdrawal_id"], "--signer", "software")
    shop.cli("withdraw", "broadcast", moved["withdrawal_id"])
    await node.mine(1)
    assert txid in (await node.call("getblock", (await node.call("getbestblockhash"))))["tx"]
    events = shop.poll()
    assert not [e for e in events if e["kind"] in ("unexpected_spend", "payment_to_unknown_address")]
    listed = {w["wallet"]: w for w in shop.cli("wallet", "list")[1]["wallets"]}
    assert listed["treasury"]["confirmed_sat"] == 900_000 - 200_000 - large["fee_sat"] + 180_000


def _edit_first_signature(psbt: str, edit) -> str:  # noqa: ANN001
    with ChainParams("bitcoin/regtest"):
        parsed = PartiallySignedTransaction.from_base64(psbt)
        inp = parsed.inputs[0]
        pub, sig = next(iter(inp.partial_sigs.items()))
        del inp.partial_sigs[pub]
        new_pub, new_sig = edit(pub, sig)
        inp.partial_sigs[new_pub] = new_sig
        # python-bitcointx itself refuses to write a key outside the script: skip its checks
        return base64.b64encode(parsed.serialize(relaxed_sanity_checks=True)).decode()


def with_stranger_signature(psbt: str) -> str:
    stranger = CKey(b"\x07" * 32)
    return _edit_first_signature(psbt, lambda pub, sig: (stranger.pub, sig))


def with_broken_signature(psbt: str) -> str:
    def flip(pub, sig):  # noqa: ANN001, ANN202
        raw = bytearray(sig)
        raw[10] ^= 1
        return pub, bytes(raw)
    return _edit_first_signature(psbt, flip)



async def test_a_multisig_withdrawal_is_voided_with_two_cosigners(node, tmp_path) -> None:
    shop, keys = await multisig_shop(node, tmp_path)
    shop.cli("wallet", "add", "treasury", "--threshold", "2", *[a for k in keys for a in ("--key", k[0])])
    await node.send(shop.order("t-1", 500_000, "--wallet", "treasury")["address"], 500_000)
    await node.mine(1)
    shop.poll()
    cos_b = await cosigner_wallet(node, [keys[0][0], keys[1][1], keys[2][0]], 1)
    shop.env["KACCY_SIGNER_CORE_WALLET"] = cos_b
    dest = await node.call("getnewaddress", wallet="miner")
    wid = shop.cli("withdraw", "create", "--wallet", "treasury", "--to", dest, "--amount-sat", "100000",
                   "--fee-rate", "2")[1]["withdrawal_id"]
    shop.cli("withdraw", "sign", wid, "--signer", "software")
    shop.cli("withdraw", "sign", wid, "--signer", "core")
    original = shop.cli("withdraw", "broadcast", wid)[1]["txid"]

    voided = shop.cli("withdraw", "void", wid, "--signer", "software")[1]
    void = voided["void"]
    assert void["state"] == "partially_signed" and void["kind"] == "void" and void["wallet"] == "treasury"
    assert original in await node.call("getrawmempool")                     # nothing sent with one signature
    assert shop.cli("withdraw", "sign", void["withdrawal_id"], "--signer", "core")[1]["state"] == "signed"
    sent = shop.cli("withdraw", "broadcast", void["withdrawal_id"])[1]
    mempool = await node.call("getrawmempool")
    assert sent["txid"] in mempool and original not in mempool
    await node.mine(1)
    shop.poll()
    assert shop.cli("withdraw", "show", void["withdrawal_id"])[1]["state"] == "confirmed"
    assert shop.cli("withdraw", "show", wid)[1]["state"] == "voided"
    listed = {w["wallet"]: w for w in shop.cli("wallet", "list")[1]["wallets"]}
    assert listed["treasury"]["confirmed_sat"] == 500_000 - void["fee_sat"]


@pytest.mark.parametrize("database", DATABASES)
async def test_wallets_added_at_once_by_several_processes_all_get_their_own_chains(node, tmp_path, database) -> None:
    settings = {}
    if database == "postgresql":
        fresh_engine("postgresql", tmp_path).dispose()
        settings["KACCY_DATABASE_URL"] = os.environ["KACCY_TEST_DATABASE_URL"]
    shop, keys = await multisig_shop(node, tmp_path, **settings)
    public = [a for k in keys for a in ("--key", k[0])]
    definitions = [("1", public), ("2", public), ("3", public), ("1", public[:4])]
    procs = [subprocess.Popen([CLI, "wallet", "add", f"w{n}", "--threshold", threshold, *given], env=shop.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, (threshold, given) in enumerate(definitions)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all("wallet" in r for r in results), results
    listed = [w["wallet"] for w in shop.cli("wallet", "list")[1]["wallets"]]
    assert sorted(listed) == ["default", "w0", "w1", "w2", "w3"]
    orders = [shop.order(f"o-{n}", 10_000, "--wallet", f"w{n}")["address"] for n in range(4)]
    assert orders == [r["first_address"] for r in results]
    reordered = public[2:] + public[:2]
    rc, out = shop.cli("wallet", "add", "twin", "--threshold", "2", *reordered, check=False)
    assert rc == 2 and out["error"]["code"] == "wallet_exists" and "w1" in out["error"]["message"]
