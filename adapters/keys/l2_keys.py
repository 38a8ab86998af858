"""Stacks and RSK account keys from the software signer's BIP39 seed (bip-utils BIP32).

Paths in domain/l2_accounts.py: m/44'/5757'/0'/0/0 (Stacks), m/44'/137'/0'/0/0 (RSK mainnet) or
m/44'/37310'/0'/0/0 (RSK testnet and regtest).
"""
from __future__ import annotations

from kaccy_bitcoin.adapters.keys.software_signer import master_key
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.l2_accounts import L2Accounts, rsk_path, stacks_path
from kaccy_bitcoin.ports.l2_keys import L2Keys


class SeedL2Keys(L2Keys):
    def __init__(self, mnemonic: str, passphrase: str, network: Network) -> None:
        master = master_key(mnemonic, passphrase)
        self._network = network
        self._stacks = master.DerivePath(stacks_path())
        self._rsk = master.DerivePath(rsk_path(network))

    def accounts(self) -> L2Accounts:
        return L2Accounts(self._network, self._stacks.PublicKey().RawCompressed().ToBytes(),
                          self._rsk.PublicKey().RawCompressed().ToBytes())

    def stacks_secret(self) -> bytes:
        return self._stacks.PrivateKey().Raw().ToBytes()

    def rsk_secret(self) -> bytes:
        return self._rsk.PrivateKey().Raw().ToBytes()
