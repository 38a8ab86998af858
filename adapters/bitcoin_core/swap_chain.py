"""The swaps' view of the node (ports/swap_chain.py) through Bitcoin Core's JSON-RPC.

`gettxout` (mempool included) says whether an HTLC is unspent; `gettxspendingprevout` finds a
spend in the mempool, and the blocks from the lock's height on (`getblock` verbosity 2) one
that is mined. A transaction that is not in the mempool is found by `getrawtransaction`
(the node's txindex) or, for ours, in the watch wallet.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcError
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.ports.swap_chain import ChainOutput, SwapChain, TransactionRefused

SCAN_LIMIT = 5_000   # blocks looked at for a mined spend at most (a swap's locks last far less)


class BitcoinCoreSwapChain(SwapChain):
    def __init__(self, rpc: BitcoinRpc, wallet: str = "kaccy-watch") -> None:
        self._rpc, self._wallet = rpc, wallet

    async def tip_height(self) -> int:
        return int(await self._rpc.call("getblockcount"))

    async def unspent_output(self, outpoint: OutPoint) -> ChainOutput | None:
        found = await self._rpc.call("gettxout", outpoint.txid.value, outpoint.vout, True)
        if found is None:
            return None
        return ChainOutput(Satoshis.from_btc(Decimal(str(found["value"]))),
                           bytes.fromhex(found["scriptPubKey"]["hex"]), int(found.get("confirmations", 0)))

    async def _transaction(self, txid: Txid) -> dict[str, Any] | None:
        try:
            return await self._rpc.call("getrawtransaction", txid.value, True)
        except RpcError as err:
            if err.rpc_code != RpcError.INVALID_ADDRESS_OR_KEY:
                raise
        try:
            found = await self._rpc.call("gettransaction", txid.value, True, True, wallet=self._wallet)
        except RpcError as err:
            if err.rpc_code not in (RpcError.INVALID_ADDRESS_OR_KEY, -18):   # unknown tx, or no such wallet
                raise
            return None
        if int(found.get("confirmations", 0)) < 0:   # conflicted: not on the best chain nor in the mempool
            return None
        return {**found["decoded"], "confirmations": found.get("confirmations", 0)}

    async def output_count(self, txid: Txid) -> int | None:
        tx = await self._transaction(txid)
        return None if tx is None else len(tx["vout"])

    async def confirmations(self, txid: Txid) -> int | None:
        tx = await self._transaction(txid)
        return None if tx is None else int(tx.get("confirmations", 0))

    async def spender(self, outpoint: OutPoint, from_height: int) -> bytes | None:
        (spend,) = await self._rpc.call("gettxspendingprevout", [{"txid": outpoint.txid.value,
                                                                   "vout": outpoint.vout}])
        if spend.get("spendingtxid"):
            return bytes.fromhex(await self._rpc.call("getrawtransaction", spend["spendingtxid"], False))
        tip = await self.tip_height()
        for height in range(max(from_height, tip - SCAN_LIMIT), tip + 1):
            block = await self._rpc.call("getblock", await self._rpc.call("getblockhash", height), 2)
            for tx in block["tx"]:
                if any(i.get("txid") == outpoint.txid.value and i.get("vout") == outpoint.vout for i in tx["vin"]):
                    return bytes.fromhex(tx["hex"])
        return None

    async def refusal(self, raw_tx: bytes) -> str | None:
        (verdict,) = await self._rpc.call("testmempoolaccept", [raw_tx.hex()])
        return None if verdict.get("allowed") else str(verdict.get("reject-reason") or "refused")

    async def broadcast(self, raw_tx: bytes) -> Txid:
        try:
            return Txid(await self._rpc.call("sendrawtransaction", raw_tx.hex()))
        except RpcError as err:
            if err.rpc_code in (-25, -26, -27):   # missing inputs, rejected, already in the chain
                raise TransactionRefused(f"the node refused transaction: {err.rpc_message}") from None
            raise
