"""The sBTC deposit output on the real regtest chain: the reclaim leaf is refused before its CSV
delay and spends after it (a script-path Schnorr spend with the control block of domain/sbtc.py);
the deposit leaf spends with the signers' key at once (consensus: mined through generateblock). The next pass's `peg reclaim` builds on this."""
from __future__ import annotations

import pytest
from bitcointx import ChainParams
from bitcointx.core import COutPoint, CMutableTransaction, CTxIn, CTxInWitness, CTxOut, CTxWitness, lx
from bitcointx.core.key import CKey, XOnlyPubKey
from bitcointx.core.script import (SIGVERSION_TAPSCRIPT, CScript, CScriptWitness, SignatureHashSchnorr,
                                   TaprootScriptTree)

from kaccy_bitcoin.domain import sbtc
from kaccy_bitcoin.domain.bitcoin import Address, Network

pytestmark = pytest.mark.node

OUR_KEY = CKey.from_secret_bytes(bytes(range(1, 33)))
SIGNERS_KEY = CKey.from_secret_bytes(bytes(range(33, 65)))
RECIPIENT = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"


async def _deposit(node, scripts: sbtc.DepositScripts, amount: int) -> tuple[str, int]:  # noqa: ANN001
    txid = await node.send(scripts.address(Network.REGTEST), amount)
    raw = await node.call("gettransaction", txid, wallet="miner")
    decoded = await node.call("decoderawtransaction", raw["hex"])
    vout = next(o["n"] for o in decoded["vout"] if o["scriptPubKey"]["hex"] == scripts.script_pubkey.hex())
    return txid, vout


def _spend(scripts: sbtc.DepositScripts, txid: str, vout: int, amount: int, leaf: str, key: CKey,
           sequence: int, to: str) -> str:
    """A script-path spend of `leaf` signed by `key` (SIGHASH_DEFAULT), as raw hex."""
    with ChainParams(Network.REGTEST.chain_params):
        if leaf == "reclaim":
            script, control = sbtc.reclaim_leaf(scripts)
        else:
            tree = TaprootScriptTree([CScript(scripts.deposit_script, name="deposit"),
                                      CScript(scripts.reclaim_script, name="reclaim")],
                                     internal_pubkey=XOnlyPubKey(sbtc.NUMS_X_ONLY))
            script, control = tree.get_script_with_control_block("deposit")
        spent = CTxOut(amount, CScript(scripts.script_pubkey))
        tx = CMutableTransaction([CTxIn(COutPoint(lx(txid), vout), nSequence=sequence)],
                                 [CTxOut(amount - 1_000, CScript(Address(to, Network.REGTEST).script_pubkey()))],
                                 nVersion=2)
        sighash = SignatureHashSchnorr(tx, 0, [spent], sigversion=SIGVERSION_TAPSCRIPT,
                                      tapleaf_hash=_tapleaf_hash(bytes(script)))
        sig = key.sign_schnorr_no_tweak(sighash)
        tx.wit = CTxWitness([CTxInWitness(CScriptWitness([sig, bytes(script), bytes(control)]))])
        return tx.serialize().hex()


def _tapleaf_hash(script: bytes) -> bytes:
    import hashlib

    tag = hashlib.sha256(b"TapLeaf").digest()
    return hashlib.sha256(tag + tag + bytes([0xC0, len(script)]) + script).digest()


async def test_reclaim_leaf_spends_only_after_the_csv_delay(node) -> None:  # noqa: ANN001
    lock = 3
    scripts = sbtc.build_deposit(SIGNERS_KEY.xonly_pub, RECIPIENT, 80_000, OUR_KEY.xonly_pub, lock_time=lock)
    txid, vout = await _deposit(node, scripts, 100_000)
    await node.mine(1)
    to = await node.call("getnewaddress", wallet="miner")
    early = _spend(scripts, txid, vout, 100_000, "reclaim", OUR_KEY, lock, to)
    [result] = await node.call("testmempoolaccept", [early])
    assert not result["allowed"] and "non-BIP68-final" in result["reject-reason"], result
    wrong_key = _spend(scripts, txid, vout, 100_000, "reclaim", SIGNERS_KEY, lock, to)
    await node.mine(lock - 1)
    [result] = await node.call("testmempoolaccept", [wrong_key])
    assert not result["allowed"], result
    [result] = await node.call("testmempoolaccept", [early])
    assert result["allowed"], result.get("reject-reason")
    assert await node.call("sendrawtransaction", early)


async def test_deposit_leaf_spends_with_the_signers_key(node) -> None:  # noqa: ANN001
    scripts = sbtc.build_deposit(SIGNERS_KEY.xonly_pub, RECIPIENT, 80_000, OUR_KEY.xonly_pub)
    txid, vout = await _deposit(node, scripts, 50_000)
    await node.mine(1)
    to = await node.call("getnewaddress", wallet="miner")
    sweep = _spend(scripts, txid, vout, 50_000, "deposit", SIGNERS_KEY, 0xFFFFFFFE, to)
    # Consensus-valid: mined as given (Knots's relay policy counts the deposit leaf's data push as
    # data carrier and refuses it from its mempool unless -acceptnonstddatacarrier=1; Core relays it).
    [result] = await node.call("testmempoolaccept", [sweep])
    assert result["allowed"] or result["reject-reason"] == "txn-datacarrier-nonstandard", result
    block = await node.call("generateblock", node.miner_address, [sweep])
    mined = await node.call("getblock", block["hash"])
    assert len(mined["tx"]) == 2
