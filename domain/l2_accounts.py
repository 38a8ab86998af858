"""Our layer-2 accounts: where their keys sit on the signer's seed and what their addresses are.

The paths are each wallet ecosystem's standard, so the same words restore the accounts in
Leather/Xverse (Stacks, coin 5757) or a Rootstock wallet (coin 137 mainnet, 37310 testnet and
regtest). The Stacks address is the c32check P2PKH of the compressed key (`SP…` mainnet, `ST…`
the test networks); the RSK address is keccak of the uncompressed key, sent lower case; the
Bridge pays a peg-out to the legacy P2PKH address of the RSK key's (compressed) public key on our
Bitcoin network, which is `btc_refund_address`.
"""
from __future__ import annotations

from typing import Any

import attrs

from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.rsk import address_of_public_key
from kaccy_bitcoin.domain.stacks_codec import p2pkh_address

STACKS_COIN = 5757
RSK_MAINNET_COIN, RSK_TESTNET_COIN = 137, 37310


def stacks_path(index: int = 0) -> str:
    return f"m/44'/{STACKS_COIN}'/0'/0/{index}"


def rsk_path(network: Network, index: int = 0) -> str:
    coin = RSK_MAINNET_COIN if network is Network.MAINNET else RSK_TESTNET_COIN
    return f"m/44'/{coin}'/0'/0/{index}"


def legacy_btc_address(public_key: bytes, network: Network) -> str:
    from bitcointx import ChainParams
    from bitcointx.core.key import CPubKey
    from bitcointx.wallet import P2PKHCoinAddress

    with ChainParams(network.chain_params):
        return str(P2PKHCoinAddress.from_pubkey(CPubKey(public_key)))


@attrs.frozen
class L2Accounts:
    network: Network
    stacks_public_key: bytes
    rsk_public_key: bytes

    @property
    def stacks_address(self) -> str:
        return p2pkh_address(self.stacks_public_key, self.network is Network.MAINNET)

    @property
    def rsk_address(self) -> str:
        return address_of_public_key(self.rsk_public_key)

    @property
    def btc_refund_address(self) -> str:
        return legacy_btc_address(self.rsk_public_key, self.network)

    def view(self) -> dict[str, Any]:
        return {"stacks": {"address": self.stacks_address},
                "rsk": {"address": self.rsk_address, "btc_refund_address": self.btc_refund_address}}
