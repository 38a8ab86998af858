"""A BIP78 receiver that is not our code, for the sender's tests: an aiohttp server on 127.0.0.1
whose proposals come from a node wallet (one of its coins added, signed by walletprocesspsbt,
the payment output raised by it), honest or cheating in one named way."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from decimal import Decimal
from typing import Any

from aiohttp import web
from bitcointx import ChainParams
from bitcointx.core import CMutableTransaction, CMutableTxIn, COutPoint, CTxOut, lx
from bitcointx.core.key import BIP32Path, CPubKey
from bitcointx.core.psbt import PartiallySignedTransaction, PSBT_KeyDerivationInfo
from bitcointx.core.script import CScript

REGTEST = "bitcoin/regtest"
SAT = Decimal(100_000_000)


class Receiver:
    def __init__(self, node, wallet: str) -> None:  # noqa: ANN001
        self.node, self.wallet = node, wallet
        self.mode = "honest"
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/pj", self.handle)
        app.router.add_post("/pj/{mode}", self.handle)   # a mode per path: several senders at once
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]   # noqa: SLF001 - the port the OS chose
        self.url = f"http://127.0.0.1:{port}/pj"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def coin(self, address_type: str) -> dict[str, Any]:
        for u in await self.node.call("listunspent", 1, wallet=self.wallet):
            info = await self.node.call("getaddressinfo", u["address"], wallet=self.wallet)
            p2sh = info.get("script") == "witness_v0_keyhash" and info.get("isscript")
            if (address_type == "p2sh-segwit") == bool(p2sh) and (p2sh or info.get("witness_version") == 0):
                return u
        raise AssertionError(f"the receiver wallet has no confirmed {address_type} coin")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append({"query": dict(request.query), "body": body, "content_type": request.content_type,
                              "mode": request.match_info.get("mode", self.mode)})
        mode = request.match_info.get("mode", self.mode)
        if mode == "error":
            return web.json_response({"errorCode": "unavailable", "message": "come back later"}, status=400)
        if mode == "timeout":
            await asyncio.sleep(5)
        # the receiver's checks: the original is broadcastable
        final = await self.node.call("finalizepsbt", body)
        (verdict,) = await self.node.call("testmempoolaccept", [final["hex"]])
        if not verdict["allowed"]:
            return web.json_response({"errorCode": "original-psbt-rejected", "message": str(verdict)}, status=400)
        proposal = await self.propose(body, request.query, mode)
        return web.Response(text=proposal, content_type="text/plain")

    async def propose(self, original: str, query: Any, mode: str) -> str:  # noqa: ANN401
        coin = await self.coin("p2sh-segwit" if mode == "script_type" else "p2wpkh")
        value = int(Decimal(str(coin["amount"])) * SAT)
        with ChainParams(REGTEST):
            orig = PartiallySignedTransaction.from_base64(original)
            otx = orig.unsigned_tx
            fee = orig.get_fee()
            vsize = CMutableTransaction.from_tx(orig.extract_transaction()).get_virtual_size()
            payment = next(n for n, o in enumerate(otx.vout) if n != int(query.get("additionalfeeoutputindex", -1)))
            tx = CMutableTransaction.from_tx(otx)
            tx.vin.insert(1, CMutableTxIn(COutPoint(lx(coin["txid"]), coin["vout"]), nSequence=otx.vin[0].nSequence))
            # the added input (68 vB) at the original's rate: from the sender's fee output up to what it
            # allows; what the fee still lacks to keep minfeerate (a vbyte to spare) from our own output
            allowed = int(query.get("maxadditionalfeecontribution", 0)) if "additionalfeeoutputindex" in query else 0
            contribution = min(-(-fee * 68 // vsize), allowed)
            if mode == "fee_too_high":
                contribution = allowed + 50
            target = int((Decimal(query.get("minfeerate", "1")) * (vsize + 69)).to_integral_value(rounding="ROUND_CEILING"))
            if "additionalfeeoutputindex" in query:
                tx.vout[int(query["additionalfeeoutputindex"])].nValue -= contribution
            tx.vout[payment].nValue += value - max(0, target - fee - contribution)
            if mode == "reduce_payment":
                tx.vout[payment].nValue = otx.vout[payment].nValue - 1000
            elif mode == "sequence":
                tx.vin[0].nSequence = 0xFFFFFFFE
                tx.vin[1].nSequence = 0xFFFFFFFE
            elif mode == "version":
                tx.nVersion = 1
            elif mode == "locktime":
                tx.nLockTime = otx.nLockTime - 1
            elif mode == "drop_output":
                del tx.vout[int(query["additionalfeeoutputindex"])]
            elif mode == "input_changed":
                del tx.vin[0]
            prop = PartiallySignedTransaction(unsigned_tx=tx.to_immutable())
            prop.inputs[1 if mode != "input_changed" else 0].set_utxo(
                CTxOut(value, CScript(bytes.fromhex(coin["scriptPubKey"]))), prop.unsigned_tx)
            unsigned = prop.to_base64()
        if mode == "unfinalized":
            processed = await self.node.call("walletprocesspsbt", unsigned, False, "ALL", False, False,
                                             wallet=self.wallet)
        else:
            processed = await self.node.call("walletprocesspsbt", unsigned, True, "ALL", False, True,
                                             wallet=self.wallet)
        with ChainParams(REGTEST):
            signed = PartiallySignedTransaction.from_base64(processed["psbt"], relaxed_sanity_checks=True)
            key = CPubKey(bytes.fromhex("03159ac01aa0d58754c4b4d8b7d349ed1edfcf0b362b4f6b55106723a2858f8516"))
            if mode == "keypath":
                signed.inputs[0].derivation_map = OrderedDict(
                    {key: PSBT_KeyDerivationInfo(b"\x01\x02\x03\x04", BIP32Path("m/84'/1'/0'/0/0"))})
            elif mode == "partial_sig":
                signed.inputs[0].partial_sigs = OrderedDict({key: bytes.fromhex("30440220" + "11" * 32 + "0220"
                                                                               + "22" * 32 + "01")})
            return signed.to_base64()
