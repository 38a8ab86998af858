"""HD derivation: every address equals Bitcoin Core's deriveaddresses for the same descriptor."""
from __future__ import annotations

import pytest
from bip_utils import (Bip39SeedGenerator, Bip44, Bip44Coins, Bip49, Bip49Coins, Bip84, Bip84Coins, Bip86,
                       Bip86Coins)

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.domain.bitcoin import AddressType, Network
from kaccy_bitcoin.domain.errors import InvalidExtendedKey

WORDS = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
SEED = Bip39SeedGenerator(WORDS).Generate()
COUNT = 300


def account(cls, coin):  # noqa: ANN001, ANN201
    return cls.FromSeed(SEED, coin).Purpose().Coin().Account(0)


def test_bip84_test_vectors() -> None:
    zpub = account(Bip84, Bip84Coins.BITCOIN).PublicKey().ToExtended()
    d = Bip32AddressDeriver(zpub, Network.MAINNET)
    assert d.address_type is AddressType.P2WPKH
    assert d.address(0, 0) == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    assert d.address(0, 1) == "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
    assert d.address(1, 0) == "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"
    assert str(d.path(0, 1)) == "m/84'/0'/0'/0/1"


CASES = [
    ("p2wpkh", Bip84, Bip84Coins.BITCOIN_TESTNET, AddressType.P2WPKH, "wpkh"),
    ("p2sh-p2wpkh", Bip49, Bip49Coins.BITCOIN_TESTNET, AddressType.P2SH, "sh(wpkh"),
    ("p2pkh", Bip44, Bip44Coins.BITCOIN_TESTNET, AddressType.P2PKH, "pkh"),
    ("p2tr", Bip86, Bip86Coins.BITCOIN_TESTNET, AddressType.P2TR, "tr"),
]


@pytest.mark.node
@pytest.mark.parametrize("name, cls, coin, kind, script", CASES, ids=[c[0] for c in CASES])
async def test_matches_core_deriveaddresses(node, name, cls, coin, kind, script) -> None:  # noqa: ANN001
    key = account(cls, coin).PublicKey().ToExtended()
    d = Bip32AddressDeriver(key, Network.REGTEST, kind)
    assert d.address_type is kind
    for chain in (0, 1):
        info = await node.call("getdescriptorinfo", d.descriptor(chain))
        expected = await node.call("deriveaddresses", info["descriptor"], [0, COUNT - 1])
        assert d.addresses(chain, 0, COUNT) == expected
        assert d.address(chain, COUNT - 1) == expected[-1]


def test_slip132_prefix_decides_script_type() -> None:
    upub = account(Bip49, Bip49Coins.BITCOIN_TESTNET).PublicKey().ToExtended()
    assert upub.startswith("upub")
    d = Bip32AddressDeriver(upub, Network.TESTNET, AddressType.P2PKH)  # the prefix wins
    assert d.address_type is AddressType.P2SH and d.address(0, 0).startswith("2")
    tpub = account(Bip44, Bip44Coins.BITCOIN_TESTNET).PublicKey().ToExtended()
    assert Bip32AddressDeriver(tpub, Network.SIGNET, AddressType.P2TR).address(0, 0).startswith("tb1p")


@pytest.mark.parametrize("key, network, message", [
    (account(Bip84, Bip84Coins.BITCOIN).PublicKey().ToExtended(), Network.REGTEST, "for mainnet"),
    (account(Bip84, Bip84Coins.BITCOIN_TESTNET).PublicKey().ToExtended(), Network.MAINNET, "test networks"),
    (account(Bip84, Bip84Coins.BITCOIN_TESTNET).PrivateKey().ToExtended(), Network.REGTEST, "private key"),
    ("vpub5Y6cjg78GGuNLsaPhmYsiw4gYX3HoQiRBiSwDaBXKUafCt9bNwWQiitDk5VZ5BVxYnQdwoTyXSs2JHRPAgjAvtbBrf8ZhDYe2jWAqvZVnsd",
     Network.REGTEST, "base58check"),
    ("hello", Network.REGTEST, "base58check"),
    (Bip84.FromSeed(SEED, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().PublicKey().ToExtended(),
     Network.REGTEST, "depth 3"),
])
def test_bad_keys_are_refused_clearly(key: str, network: Network, message: str) -> None:
    with pytest.raises(InvalidExtendedKey, match=message):
        Bip32AddressDeriver(key, network)
