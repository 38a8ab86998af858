"""Swap keys from the software signer's BIP39 seed (bip-utils), signatures by python-bitcointx.

Path: m/1000'/coin'/0'/index' (coin 0 on mainnet, 1 on the test networks): a purpose of its
own, so no swap key is ever an address key of a BIP44/49/84/86/48 account.
"""
from __future__ import annotations

from bitcointx.core.key import CKey

from kaccy_bitcoin.adapters.keys.software_signer import master_key
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.ports.swap_keys import SwapKeys

SWAP_PURPOSE = 1000


def swap_key_path(network: Network, index: int) -> str:
    return f"m/{SWAP_PURPOSE}'/{network.coin_type}'/0'/{index}'"


class SeedSwapKeys(SwapKeys):
    def __init__(self, mnemonic: str, passphrase: str, network: Network) -> None:
        self._master = master_key(mnemonic, passphrase)
        self._network = network

    def _key(self, index: int) -> CKey:
        node = self._master.DerivePath(swap_key_path(self._network, index))
        return CKey(node.PrivateKey().Raw().ToBytes())

    def public_key(self, index: int) -> bytes:
        return bytes(self._key(index).pub)

    def sign(self, index: int, sighash: bytes) -> bytes:
        return bytes(self._key(index).sign(sighash))
