"""Signs PSBTs with a node-held hot wallet (walletprocesspsbt).

It asks for SIGHASH_DEFAULT: SIGHASH_ALL for ECDSA inputs, and for taproot key-path inputs
the 64-byte signature the fee was estimated for (an explicit ALL would add a byte)."""
from __future__ import annotations

from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcError
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.psbt import psbt_status
from kaccy_bitcoin.ports.signer import PsbtSigner, SignerError, SignResult


class CoreWalletSigner(PsbtSigner):
    name = "core"

    def __init__(self, rpc: BitcoinRpc, wallet: str, network: Network) -> None:
        self._rpc = rpc
        self._wallet = wallet
        self._network = network

    async def sign(self, psbt: str) -> SignResult:
        before = psbt_status(self._network, psbt)
        try:
            r = await self._rpc.call("walletprocesspsbt", psbt, True, "DEFAULT", True, False, wallet=self._wallet)
        except RpcError as err:
            raise SignerError(f"node wallet {self._wallet!r} could not sign: {err.rpc_message}") from None
        after = psbt_status(self._network, r["psbt"])
        if (after.inputs_signed, after.signatures) == (before.inputs_signed, before.signatures) and not after.complete:
            raise SignerError(f"node wallet {self._wallet!r} holds none of the keys this PSBT needs")
        return SignResult(r["psbt"], bool(r["complete"]) or after.complete, after.inputs_signed - before.inputs_signed)
