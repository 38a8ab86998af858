"""`withdraw combine` through the CLI against the regtest node: a PSBT signed by a Core wallet
holding the keys (`walletprocesspsbt`) combines and broadcasts, P2TR and P2PKH alike; a
signature that does not verify is refused (`bad_signature`) and nothing is written."""
from __future__ import annotations

import pytest
from bitcointx import ChainParams
from bitcointx.core.script import CScript

from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.psbt import parse_psbt, set_tap_key_sig, tap_key_sig
from tests.payments_harness import Shop
from tests.test_address_types_regtest import Account

pytestmark = pytest.mark.node
REGTEST = Network.REGTEST


async def _withdrawal(node, tmp_path, kind: str) -> tuple[Account, Shop, dict]:  # noqa: ANN001
    account = Account.fresh(kind)
    shop = Shop(node, tmp_path, **account.settings())
    for n, amount in enumerate((200_000, 300_000)):
        await node.send(shop.order(f"{kind}-{n}", amount)["address"], amount)
    await node.mine(1)
    await node.call("syncwithvalidationinterfacequeue")
    shop.poll()
    dest = await node.call("getnewaddress", wallet="miner")
    created = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "400000", "--fee-rate", "3")[1]
    assert len(created["inputs"]) == 2 and created["state"] == "created"
    return account, shop, created


async def _signed_by_core(node, account: Account, psbt: str, finalize: bool = False) -> str:  # noqa: ANN001
    """What an operator gets from a node wallet holding the keys: `walletprocesspsbt`, its
    inputs finalized (its default) or not."""
    signed = await node.call("walletprocesspsbt", psbt, True, "DEFAULT", True, finalize,
                             wallet=await account.hot_wallet(node))
    decoded = await node.call("decodepsbt", signed["psbt"])
    done = ("final_scriptwitness", "final_scriptSig") if finalize else ("taproot_key_path_sig", "partial_signatures")
    assert all(any(k in i for k in done) for i in decoded["inputs"]), decoded["inputs"]
    return signed["psbt"]


def _edit(psbt: str, change) -> str:  # noqa: ANN001
    with ChainParams(REGTEST.chain_params):
        parsed = parse_psbt(REGTEST, psbt, relaxed=True)
        change(parsed.inputs[0])
        return parsed.to_base64()


def _refused_and_nothing_written(shop: Shop, created: dict, psbt: str) -> None:
    wid = created["withdrawal_id"]
    rc, out = shop.cli("withdraw", "combine", wid, "--psbt", psbt, check=False)
    assert rc == 2 and out["error"]["code"] == "bad_signature", out
    shown = shop.cli("withdraw", "show", wid)[1]
    assert shown["state"] == "created" and shown["psbt"] == created["psbt"]


async def _combines_and_broadcasts(node, shop: Shop, created: dict, psbt: str) -> None:  # noqa: ANN001
    wid = created["withdrawal_id"]
    combined = shop.cli("withdraw", "combine", wid, "--psbt", psbt)[1]
    assert combined["state"] == "signed", combined
    sent = shop.cli("withdraw", "broadcast", wid)[1]
    assert sent["state"] == "broadcast" and sent["txid"] in await node.call("getrawmempool")


async def test_p2tr_signed_by_core_combines_and_a_junk_signature_is_refused(node, tmp_path) -> None:  # noqa: ANN001
    account, shop, created = await _withdrawal(node, tmp_path, "p2tr")
    core = await _signed_by_core(node, account, created["psbt"])
    # Core sends back the taproot derivation and internal key the PSBT already had, beside its signature.
    decoded = await node.call("decodepsbt", core)
    assert all(len(i["taproot_key_path_sig"]) == 128 and i["taproot_bip32_derivs"] for i in decoded["inputs"])

    _refused_and_nothing_written(shop, created, _edit(created["psbt"], lambda i: set_tap_key_sig(i, b"\x5a" * 64)))
    flipped = _edit(core, lambda i: set_tap_key_sig(i, tap_key_sig(i)[:-1] + bytes([tap_key_sig(i)[-1] ^ 1])))
    _refused_and_nothing_written(shop, created, flipped)
    await _combines_and_broadcasts(node, shop, created, core)


async def test_p2pkh_signature_that_does_not_verify_is_refused(node, tmp_path) -> None:  # noqa: ANN001
    account, shop, created = await _withdrawal(node, tmp_path, "p2pkh")
    core = await _signed_by_core(node, account, created["psbt"])

    def tamper(inp) -> None:  # noqa: ANN001
        pub, sig = next(iter(inp.partial_sigs.items()))
        inp.partial_sigs[pub] = sig[:-3] + bytes([sig[-3] ^ 1]) + sig[-2:]     # inside S: well formed, wrong

    _refused_and_nothing_written(shop, created, _edit(core, tamper))
    junk = _edit(created["psbt"], lambda i: i.partial_sigs.__setitem__(next(iter(i.derivation_map)),
                                                                       b"\x30" + bytes(69) + b"\x01"))
    _refused_and_nothing_written(shop, created, junk)

    # walletprocesspsbt finalizes by default: the final scriptSig is checked the same way.
    final = await _signed_by_core(node, account, created["psbt"], finalize=True)

    def tamper_final(inp) -> None:  # noqa: ANN001
        sig, *rest = list(CScript(inp.final_script_sig))
        inp.final_script_sig = CScript([sig[:-3] + bytes([sig[-3] ^ 1]) + sig[-2:], *rest])

    _refused_and_nothing_written(shop, created, _edit(final, tamper_final))
    await _combines_and_broadcasts(node, shop, created, final)
