"""Every address type KACCY_ADDRESS_TYPE accepts can be deposited to and spent, on the regtest node.

Per type: a shop on a BIP44/49/84/86 account, two deposits through `order create`, a
withdrawal spending both through the CLI, its PSBT read by the node (`decodepsbt`) with
the type's fields, our size estimate equal to `analyzepsbt`'s, Core signing the same PSBT
with the private descriptors and our finalizer making a transaction the node accepts, then
the software signer, broadcast, a block, and the change back on the same type.
"""
from __future__ import annotations

import uuid
from decimal import Decimal

import attrs
import pytest
from bip_utils import (
    Base58Decoder,
    Base58Encoder,
    Bip32Secp256k1,
    Bip39MnemonicGenerator,
    Bip39SeedGenerator,
    Bip39WordsNum,
    Bip44,
    Bip44Coins,
    Bip49,
    Bip49Coins,
    Bip84,
    Bip84Coins,
    Bip86,
    Bip86Coins,
)
from bitcointx import ChainParams
from bitcointx.core.script import CScript, OP_TRUE
from bitcointx.wallet import P2WSHCoinAddress

from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcError
from kaccy_bitcoin.adapters.bitcoin_core.signer import CoreWalletSigner
from kaccy_bitcoin.domain.bitcoin import Address, AddressType, Network
from kaccy_bitcoin.domain.coin_selection import DUST_LIMIT
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.psbt import estimated_vsize, finalize_psbt, psbt_txid
from tests.payments_harness import Shop

pytestmark = pytest.mark.node
REGTEST = Network.REGTEST
TPRV = bytes.fromhex("04358394")

# kind: (bip-utils class, coin, purpose, descriptor, address type, KACCY_ADDRESS_TYPE or None when
# the key's SLIP-132 prefix decides, PSBT input fields, change output fields)
KINDS = {
    "p2wpkh": (Bip84, Bip84Coins.BITCOIN_TESTNET, 84, "wpkh({})", AddressType.P2WPKH, None,
               {"witness_utxo", "bip32_derivs"}, {"bip32_derivs"}),
    "p2sh-p2wpkh": (Bip49, Bip49Coins.BITCOIN_TESTNET, 49, "sh(wpkh({}))", AddressType.P2SH, None,
                    {"witness_utxo", "redeem_script", "bip32_derivs"}, {"redeem_script", "bip32_derivs"}),
    "p2pkh": (Bip44, Bip44Coins.BITCOIN_TESTNET, 44, "pkh({})", AddressType.P2PKH, "p2pkh",
              {"non_witness_utxo", "bip32_derivs"}, {"bip32_derivs"}),
    "p2tr": (Bip86, Bip86Coins.BITCOIN_TESTNET, 86, "tr({})", AddressType.P2TR, "p2tr",
             {"witness_utxo", "taproot_internal_key", "taproot_bip32_derivs"},
             {"taproot_internal_key", "taproot_bip32_derivs"}),
}


@attrs.frozen
class Account:
    kind: str
    words: str
    xpub: str          # as bip-utils writes it: vpub (BIP84), upub (BIP49), tpub (BIP44, BIP86)
    tprv: str
    fingerprint: str

    @classmethod
    def fresh(cls, kind: str) -> Account:
        bip, coin = KINDS[kind][:2]
        words = str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_12))
        seed = Bip39SeedGenerator(words).Generate()
        account = bip.FromSeed(seed, coin).Purpose().Coin().Account(0)
        tprv = Base58Encoder.CheckEncode(TPRV + Base58Decoder.CheckDecode(account.PrivateKey().ToExtended())[4:])
        return cls(kind, words, account.PublicKey().ToExtended(), tprv,
                   Bip32Secp256k1.FromSeed(seed).FingerPrint().ToBytes().hex())

    @property
    def purpose(self) -> int:
        return KINDS[self.kind][2]

    def settings(self) -> dict[str, str]:
        env = {"KACCY_XPUB": self.xpub, "KACCY_SIGNER_MNEMONIC": self.words}
        if KINDS[self.kind][5]:
            env["KACCY_ADDRESS_TYPE"] = KINDS[self.kind][5]
        return env

    async def hot_wallet(self, node) -> str:  # noqa: ANN001
        """A node wallet holding this account's private descriptors (receive and change)."""
        name = f"hot-{uuid.uuid4().hex[:8]}"
        await node.call("createwallet", name, False, True)
        requests = []
        for chain in (0, 1):
            body = KINDS[self.kind][3].format(f"[{self.fingerprint}/{self.purpose}h/1h/0h]{self.tprv}/{chain}/*")
            info = await node.call("getdescriptorinfo", body)
            requests.append({"desc": f"{body}#{info['checksum']}", "range": [0, 30], "timestamp": "now",
                             "active": True, "internal": chain == 1})
        assert all(r["success"] for r in await node.call("importdescriptors", requests, wallet=name))
        return name


def sat(btc: Decimal) -> int:
    return Satoshis.from_btc(btc).value


@pytest.mark.parametrize("kind", list(KINDS))
async def test_each_address_type_is_deposited_to_withdrawn_and_confirmed(node, tmp_path, kind: str) -> None:
    account = Account.fresh(kind)
    address_type, in_fields, change_fields = KINDS[kind][4], KINDS[kind][6], KINDS[kind][7]
    shop = Shop(node, tmp_path, **account.settings())
    orders = {}
    for n, amount in enumerate((200_000, 300_000)):
        orders[f"{kind}-{n}"] = address = shop.order(f"{kind}-{n}", amount)["address"]
        assert Address(address, REGTEST).type is address_type
        await node.send(address, amount)
    await node.mine(1)
    confirmed = {e["subject"] for e in shop.poll() if e["kind"] == "payment_confirmed"}
    assert confirmed == set(orders)

    dest = await node.call("getnewaddress", wallet="miner")
    created = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "400000", "--fee-rate", "3")[1]
    wid, psbt, fee = created["withdrawal_id"], created["psbt"], created["fee_sat"]
    assert len(created["inputs"]) == 2        # 400,000 sat needs both deposits
    (change_vout,) = [n for n, o in enumerate(created["outputs"]) if o["change"]]
    change = created["outputs"][change_vout]
    assert Address(change["address"], REGTEST).type is address_type

    # The node reads the type's fields: what a signer needs for these inputs and our change.
    decoded = await node.call("decodepsbt", psbt)
    assert [set(i) for i in decoded["inputs"]] == [in_fields, in_fields]
    assert set(decoded["outputs"][change_vout]) == change_fields
    origins = [d for i in decoded["inputs"] for d in i.get("bip32_derivs", i.get("taproot_bip32_derivs", []))]
    assert len(origins) == 2 and all(d["master_fingerprint"] == account.fingerprint
                                     and d["path"].startswith(f"m/{account.purpose}h/1h/0h/0/") for d in origins)
    if kind == "p2tr":
        assert all(i["taproot_internal_key"] == i["taproot_bip32_derivs"][0]["pubkey"]
                   and i["taproot_bip32_derivs"][0]["leaf_hashes"] == [] for i in decoded["inputs"])
    if kind == "p2sh-p2wpkh":
        assert all(i["redeem_script"]["type"] == "witness_v0_keyhash" for i in decoded["inputs"])

    # Our size estimate is the node's; the fee pays the rate asked for on it.
    analyzed = await node.call("analyzepsbt", psbt)
    ours = estimated_vsize(REGTEST, psbt)
    assert analyzed["estimated_vsize"] == ours and sat(analyzed["fee"]) == fee and fee >= 3 * ours
    # Core names no missing signature for a taproot key path, so it says "updater" even for
    # the PSBTs its own wallet creates.
    assert analyzed["next"] == ("updater" if kind == "p2tr" else "signer")

    # Core signs the same PSBT with the private descriptors; our finalizer makes a transaction it accepts.
    core = await CoreWalletSigner(node.rpc, await account.hot_wallet(node), REGTEST).sign(psbt)
    assert core.complete and core.signed_inputs == 2
    if kind == "p2tr":         # SIGHASH_DEFAULT: 64 bytes, as the fee was estimated for
        assert [len(i["taproot_key_path_sig"]) for i in (await node.call("decodepsbt", core.psbt))["inputs"]] == [
            128, 128]
    _, raw, core_txid = finalize_psbt(REGTEST, core.psbt)
    (accepted,) = await node.call("testmempoolaccept", [raw.hex()])
    assert accepted["allowed"], accepted
    # The node's size is our estimate, less at most one vbyte per ECDSA signature that came
    # out shorter than Core's 71-byte dummy (a 70-byte low-R signature, now and then).
    slack = 0 if kind == "p2tr" else len(created["inputs"])
    assert ours - slack <= accepted["vsize"] <= ours

    signed = shop.cli("withdraw", "sign", wid, "--signer", "software")[1]
    assert signed["state"] == "signed"
    signature = "taproot_key_path_sig" if kind == "p2tr" else "partial_signatures"
    assert all(signature in i for i in (await node.call("decodepsbt", signed["psbt"]))["inputs"])
    txid = shop.cli("withdraw", "broadcast", wid)[1]["txid"]
    if kind != "p2pkh":        # segwit: the txid was known before any signature
        assert txid == psbt_txid(REGTEST, psbt).value == core_txid.value
    else:
        assert psbt_txid(REGTEST, psbt) is None
    entry = await node.call("getmempoolentry", txid)
    assert ours - slack <= entry["vsize"] <= ours and fee >= 3 * entry["vsize"]

    await node.mine(1)
    assert shop.cli("withdraw", "show", wid)[1]["confirmations"] == 1
    watched = await node.call("listunspent", 1, 9_999_999, [change["address"]],
                              wallet=shop.env["KACCY_BITCOIN_RPC_WALLET"])
    assert [(u["txid"], u["vout"], sat(u["amount"])) for u in watched] == [(txid, change_vout, change["amount_sat"])]


async def test_dust_limits_are_the_nodes(node) -> None:
    """Core's wallet refuses an output below the dust limit of its type, and takes one at it."""
    wallet = "miner"
    with ChainParams(REGTEST.chain_params):
        p2wsh = str(P2WSHCoinAddress.from_redeemScript(CScript([OP_TRUE])))
    addresses = {AddressType.P2PKH: await node.call("getnewaddress", "", "legacy", wallet=wallet),
                 AddressType.P2SH: await node.call("getnewaddress", "", "p2sh-segwit", wallet=wallet),
                 AddressType.P2WPKH: await node.call("getnewaddress", "", "bech32", wallet=wallet),
                 AddressType.P2WSH: p2wsh,
                 AddressType.P2TR: await node.call("getnewaddress", "", "bech32m", wallet=wallet)}
    for kind, address in addresses.items():
        assert Address(address, REGTEST).type is kind
        limit = DUST_LIMIT[kind]
        funded = await node.call("walletcreatefundedpsbt", [], [{address: Satoshis(limit).to_btc()}], 0,
                                 {"fee_rate": 2}, wallet=wallet)
        assert funded["psbt"]
        with pytest.raises(RpcError, match="too small"):
            await node.call("walletcreatefundedpsbt", [], [{address: Satoshis(limit - 1).to_btc()}], 0,
                            {"fee_rate": 2}, wallet=wallet)
