"""The counterparty of the swap tests: its own key (python-bitcointx) and its own node wallet.
Its scripts and transactions are built here, from BIP199 and BIP143 directly, never by
kaccy-bitcoin's code, so the tests check our side against an independent one."""
from __future__ import annotations

import hashlib
import os
from decimal import Decimal
from typing import Any

from bitcointx import ChainParams
from bitcointx.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxOut,
    COutPoint,
    CTxInWitness,
    CTxWitness,
    lx,
)
from bitcointx.core.key import CKey
from bitcointx.core.script import (
    OP_CHECKLOCKTIMEVERIFY,
    OP_CHECKSIG,
    OP_DROP,
    OP_DUP,
    OP_ELSE,
    OP_ENDIF,
    OP_EQUALVERIFY,
    OP_HASH160,
    OP_IF,
    OP_SHA256,
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)
from bitcointx.core.serialize import Hash160
from bitcointx.wallet import CCoinAddress, P2WSHCoinAddress


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def htlc_script(payment_hash: bytes, claimer: bytes, refunder: bytes, locktime: int) -> CScript:
    return CScript([OP_IF, OP_SHA256, payment_hash, OP_EQUALVERIFY, OP_DUP, OP_HASH160, Hash160(claimer),
                    OP_ELSE, locktime, OP_CHECKLOCKTIMEVERIFY, OP_DROP, OP_DUP, OP_HASH160, Hash160(refunder),
                    OP_ENDIF, OP_EQUALVERIFY, OP_CHECKSIG])


class Counterparty:
    def __init__(self, node: Any, wallet: str) -> None:   # noqa: ANN401
        self.node, self.wallet = node, wallet
        self.key = CKey(os.urandom(32))
        self.pub = bytes(self.key.pub)
        self.preimage = os.urandom(32)
        self.payment_hash = sha256(self.preimage)

    @classmethod
    async def make(cls, node: Any) -> Counterparty:   # noqa: ANN401
        return cls(node, await node.fresh_wallet(funded_sat=1_000_000))

    async def lock(self, script: CScript, amount_sat: int, *, mine: bool = True) -> tuple[str, int]:
        """Fund the P2WSH of `script` from our wallet; (txid, vout)."""
        with ChainParams("bitcoin/regtest"):
            address = str(P2WSHCoinAddress.from_redeemScript(script))
        txid = await self.node.call("sendtoaddress", address, str(Decimal(amount_sat) / 100_000_000),
                                    wallet=self.wallet)
        tx = await self.node.call("getrawtransaction", txid, True)
        vout = next(o["n"] for o in tx["vout"] if o["scriptPubKey"].get("address") == address)
        if mine:
            await self.node.mine(1)
        return txid, vout

    async def spend(self, script: CScript, txid: str, vout: int, amount_sat: int, *, preimage: bytes | None,
                    key: CKey | None = None, locktime: int = 0, fee_sat: int = 1_000) -> bytes:
        """A claim (with `preimage`) or refund (without) of the HTLC at txid:vout, to our wallet."""
        key = key or self.key
        dest = await self.node.call("getnewaddress", wallet=self.wallet)
        with ChainParams("bitcoin/regtest"):
            pay_to = CCoinAddress(dest).to_scriptPubKey()
        tx = CMutableTransaction([CMutableTxIn(COutPoint(lx(txid), vout), nSequence=0xFFFFFFFE)],
                                 [CMutableTxOut(amount_sat - fee_sat, pay_to)], nLockTime=locktime, nVersion=2)
        sighash = SignatureHash(script, tx, 0, SIGHASH_ALL, amount=amount_sat, sigversion=SIGVERSION_WITNESS_V0)
        sig = key.sign(sighash) + bytes([SIGHASH_ALL])
        stack = [sig, bytes(key.pub), preimage, b"\x01", bytes(script)] if preimage is not None else \
            [sig, bytes(key.pub), b"", bytes(script)]
        tx.wit = CTxWitness([CTxInWitness(CScriptWitness(stack))])
        return tx.serialize()

    async def accepted(self, raw: bytes) -> dict[str, Any]:
        (result,) = await self.node.call("testmempoolaccept", [raw.hex()])
        return result
