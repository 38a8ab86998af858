"""`kaccy-bitcoin peg accounts` and GET /v1/pegs/accounts: our L2 accounts from the signer's seed.

Independent sources: the Stacks address of stacks.js's wallet-sdk test mnemonic at
m/44'/5757'/0'/0/0 (packages/wallet-sdk/tests/derive.test.ts: `SP384CVPNDTYA0E92TKJZQTYXQHNZSWGCAG7SAPVB`);
for Rootstock no published coin-137/37310 vector was found, so the RSK keys are derived a second
way, with eth-account's own BIP32/BIP44 implementation (not bip-utils), and the address is
compared with what eth-account gives for that key.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins
from eth_account import Account

from kaccy_bitcoin.adapters.keys.l2_keys import SeedL2Keys
from kaccy_bitcoin.domain import stacks_codec as c
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.l2_accounts import legacy_btc_address, rsk_path, stacks_path

CLI = str(pathlib.Path(sys.executable).parent / "kaccy-bitcoin")
STACKS_JS_WORDS = ("sound idle panel often situate develop unit text design antenna vendor screen opinion balcony "
                   "share trigger accuse scatter visa uniform brass update opinion media")
STACKS_JS_ADDRESS = "SP384CVPNDTYA0E92TKJZQTYXQHNZSWGCAG7SAPVB"
Account.enable_unaudited_hdwallet_features()


def vpub(words: str) -> str:
    seed = Bip39SeedGenerator(words).Generate()
    return Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()


def cli(tmp_path: pathlib.Path, *args: str, **env: str) -> tuple[int, dict]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KACCY_")}
    full = {**base, "KACCY_NETWORK": "regtest", "KACCY_DATA_DIR": str(tmp_path),
            "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/l2.db", **env}
    proc = subprocess.run([CLI, *args], env=full, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr[-2000:])
    return proc.returncode, json.loads(lines[0])


def test_stacks_key_matches_stacks_js_wallet_vector() -> None:
    for network, prefix in ((Network.MAINNET, "SP"), (Network.REGTEST, "ST"), (Network.TESTNET, "ST")):
        accounts = SeedL2Keys(STACKS_JS_WORDS, "", network).accounts()
        assert accounts.stacks_address.startswith(prefix)
        assert c.c32_address_decode(accounts.stacks_address)[1] == c.c32_address_decode(STACKS_JS_ADDRESS)[1]
    assert SeedL2Keys(STACKS_JS_WORDS, "", Network.MAINNET).accounts().stacks_address == STACKS_JS_ADDRESS


@pytest.mark.parametrize("network,coin", [(Network.MAINNET, 137), (Network.TESTNET, 37310), (Network.REGTEST, 37310)])
def test_rsk_key_matches_a_second_derivation(network: Network, coin: int) -> None:
    keys = SeedL2Keys(STACKS_JS_WORDS, "", network)
    assert rsk_path(network) == f"m/44'/{coin}'/0'/0/0"
    other = Account.from_mnemonic(STACKS_JS_WORDS, account_path=f"m/44'/{coin}'/0'/0/0")
    assert keys.rsk_secret() == bytes(other.key)
    accounts = keys.accounts()
    assert accounts.rsk_address == other.address.lower()
    assert accounts.btc_refund_address == legacy_btc_address(accounts.rsk_public_key, network)
    assert accounts.btc_refund_address[0] in ("1" if network is Network.MAINNET else "mn")
    stacks_other = Account.from_mnemonic(STACKS_JS_WORDS, account_path=stacks_path())
    assert keys.stacks_secret() == bytes(stacks_other.key)


def test_refund_address_is_p2pkh_of_the_rsk_key() -> None:
    from bitcointx.core import Hash160

    accounts = SeedL2Keys(STACKS_JS_WORDS, "", Network.MAINNET).accounts()
    from bitcointx.wallet import CBitcoinAddress

    decoded = CBitcoinAddress(accounts.btc_refund_address)
    assert bytes(decoded) == bytes(Hash160(accounts.rsk_public_key))


def test_peg_accounts_cli(tmp_path: pathlib.Path) -> None:
    words = STACKS_JS_WORDS
    env = {"KACCY_XPUB": vpub(words), "KACCY_SIGNER_MNEMONIC": words}
    assert cli(tmp_path, "db", "upgrade", **env)[0] == 0
    status, out = cli(tmp_path, "peg", "accounts", **env)
    assert status == 0, out
    expected = SeedL2Keys(words, "", Network.REGTEST).accounts()
    assert out == {"stacks": {"address": expected.stacks_address},
                   "rsk": {"address": expected.rsk_address, "btc_refund_address": expected.btc_refund_address}}
    assert out["stacks"]["address"].startswith("ST") and out["rsk"]["address"] == out["rsk"]["address"].lower()
    # Without the signer's words: a typed error, no traceback.
    status, out = cli(tmp_path, "peg", "accounts", KACCY_XPUB=vpub(words))
    assert status != 0 and out["error"]["code"] == "signer_required", out
    status, out = cli(tmp_path, "peg", "nonsense", KACCY_XPUB=vpub(words))
    assert status == 2 and "error" in out


async def test_peg_accounts_through_the_facade(tmp_path: pathlib.Path) -> None:
    from kaccy_bitcoin import KaccyBitcoin
    from kaccy_bitcoin.domain.errors import KaccyError

    env = {"KACCY_NETWORK": "regtest", "KACCY_DATA_DIR": str(tmp_path), "KACCY_XPUB": vpub(STACKS_JS_WORDS),
           "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/l2.db"}
    assert cli(tmp_path, "db", "upgrade", **env)[0] == 0
    async with KaccyBitcoin.from_env({**env, "KACCY_SIGNER_MNEMONIC": STACKS_JS_WORDS}) as kaccy:
        accounts = await kaccy.peg_accounts()
    expected = SeedL2Keys(STACKS_JS_WORDS, "", Network.REGTEST).accounts().view()
    assert dict(accounts) == expected
    async with KaccyBitcoin.from_env(env) as kaccy:
        with pytest.raises(KaccyError) as err:
            await kaccy.peg_accounts()
    assert err.value.code == "signer_required"
