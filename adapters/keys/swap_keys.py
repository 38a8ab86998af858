"""Swap keys from the software signer's BIP39 seed (bip-utils), signatures by python-bitcointx.

Path: m/1000'/coin'/0'/index' (coin 0 on mainnet, 1 on the test networks): a purpose of its
own, so no swap key is ever an address key of a BIP44/49/84/86/48 account.
"""
from __future__ import annotations

from bip_utils import Bip32Secp256k1, Bip39MnemonicValidator, Bip39SeedGenerator
from bitcointx.core.key import CKey

from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.ports.signer import SignerError
from kaccy_bitcoin.ports.swap_keys import SwapKeys

SWAP_PURPOSE = 1000


def swap_key_path(network: Network, index: int) -> str:
    return f"m/{SWAP_PURPOSE}'/{network.coin_type}'/0'/{index}'"


class SeedSwapKeys(SwapKeys):
    def __init__(self, mnemonic: str, passphrase: str, network: Network) -> None:
        words = " ".join(mnemonic.split())
        try:
            valid = Bip39MnemonicValidator().IsValid(words)
        except Exception:  # noqa: BLE001 - bip-utils raises several types for bad words
            valid = False
        if not valid:
            raise SignerError("KACCY_SIGNER_MNEMONIC is not a valid BIP39 mnemonic")
        self._master = Bip32Secp256k1.FromSeed(Bip39SeedGenerator(words).Generate(passphrase))
        self._network = network

    def _key(self, index: int) -> CKey:
        node = self._master.DerivePath(swap_key_path(self._network, index))
        return CKey(node.PrivateKey().Raw().ToBytes())

    def public_key(self, index: int) -> bytes:
        return bytes(self._key(index).pub)

    def sign(self, index: int, sighash: bytes) -> bytes:
        return bytes(self._key(index).sign(sighash))
