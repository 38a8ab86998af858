"""BIP199 hash-time-locked contracts (SHA-256, absolute block height) in P2WSH outputs.

The template, exactly (docs/swaps.md):

    OP_IF
        OP_SHA256 <payment_hash:32> OP_EQUALVERIFY OP_DUP OP_HASH160 <HASH160(claimer):20>
    OP_ELSE
        <locktime> OP_CHECKLOCKTIMEVERIFY OP_DROP OP_DUP OP_HASH160 <HASH160(refunder):20>
    OP_ENDIF
    OP_EQUALVERIFY OP_CHECKSIG

`locktime` is a block height pushed as a minimal script number. A counterparty's script is
accepted only when rebuilding the template from what it names gives the very same bytes.
Claim witness: <sig> <claimer pubkey> <preimage> 01 <script>; refund witness:
<sig> <refunder pubkey> <empty> <script>, the refund with nLockTime = locktime and a
non-final sequence. Scripts, sighashes and serialization are python-bitcointx's.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import attrs
from bitcointx import ChainParams
from bitcointx.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxOut,
    COutPoint,
    CTransaction,
    CTxInWitness,
    CTxWitness,
    lx,
)
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
from bitcointx.core.script import CScriptInvalidError
from bitcointx.core.serialize import Hash160

from kaccy_bitcoin.domain.bitcoin import Network, OutPoint
from kaccy_bitcoin.domain.errors import CounterScriptMismatch, InvalidSwap
from kaccy_bitcoin.domain.money import FeeRate, Satoshis

NON_FINAL_SEQUENCE = 0xFFFFFFFE   # lets nLockTime (and so OP_CHECKLOCKTIMEVERIFY) apply
MAX_LOCKTIME_HEIGHT = 499_999_999  # above: a Unix time, which this template does not use
DUMMY_SIGNATURE = b"\x30" + b"\x00" * 71  # the longest DER signature with its sighash byte: sizing only


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def check_pubkey(pubkey: bytes, what: str) -> bytes:
    if len(pubkey) != 33 or pubkey[0] not in (2, 3):
        raise InvalidSwap(f"{what} must be a 33-byte compressed public key (66 hex digits), got {pubkey.hex()!r}")
    return pubkey


@attrs.frozen
class Htlc:
    """The terms of one hash-time-locked output."""

    payment_hash: bytes
    claimer_pubkey_hash: bytes   # HASH160 of the claimer's compressed public key
    refunder_pubkey_hash: bytes
    locktime: int

    def __attrs_post_init__(self) -> None:
        if len(self.payment_hash) != 32:
            raise InvalidSwap(f"a payment hash is 32 bytes, got {len(self.payment_hash)}")
        if len(self.claimer_pubkey_hash) != 20 or len(self.refunder_pubkey_hash) != 20:
            raise InvalidSwap("a public key hash is 20 bytes")
        if not 1 <= self.locktime <= MAX_LOCKTIME_HEIGHT:
            raise InvalidSwap(f"the locktime must be a block height from 1 to {MAX_LOCKTIME_HEIGHT}, "
                              f"got {self.locktime}")

    @classmethod
    def of(cls, payment_hash: bytes, claimer: bytes, refunder: bytes, locktime: int) -> Htlc:
        """The HTLC paying `claimer` against the preimage, else `refunder` from `locktime` on."""
        return cls(payment_hash, Hash160(check_pubkey(claimer, "the claimer's key")),
                   Hash160(check_pubkey(refunder, "the refunder's key")), locktime)

    @property
    def script(self) -> CScript:
        return CScript([
            OP_IF,
            OP_SHA256, self.payment_hash, OP_EQUALVERIFY, OP_DUP, OP_HASH160, self.claimer_pubkey_hash,
            OP_ELSE,
            self.locktime, OP_CHECKLOCKTIMEVERIFY, OP_DROP, OP_DUP, OP_HASH160, self.refunder_pubkey_hash,
            OP_ENDIF,
            OP_EQUALVERIFY, OP_CHECKSIG,
        ])

    @property
    def script_pubkey(self) -> bytes:
        return bytes(self.script.to_p2wsh_scriptPubKey())

    def address(self, network: Network) -> str:
        from bitcointx.wallet import P2WSHCoinAddress

        with ChainParams(network.chain_params):
            return str(P2WSHCoinAddress.from_redeemScript(self.script))

    def claimed_by(self, pubkey: bytes) -> bool:
        return Hash160(pubkey) == self.claimer_pubkey_hash

    def refunded_by(self, pubkey: bytes) -> bool:
        return Hash160(pubkey) == self.refunder_pubkey_hash


def parse_htlc(script: bytes) -> Htlc:
    """The terms of `script` if it is the template exactly, else CounterScriptMismatch."""
    try:
        items = list(CScript(script))
    except (CScriptInvalidError, ValueError) as exc:
        raise CounterScriptMismatch(f"the counter script does not parse as a script ({exc})") from None
    shape = [OP_IF, OP_SHA256, bytes, OP_EQUALVERIFY, OP_DUP, OP_HASH160, bytes, OP_ELSE, (bytes, int),
             OP_CHECKLOCKTIMEVERIFY, OP_DROP, OP_DUP, OP_HASH160, bytes, OP_ENDIF, OP_EQUALVERIFY, OP_CHECKSIG]
    if len(items) != len(shape) or any(
            (not isinstance(item, want)) if isinstance(want, (type, tuple)) else item != want
            for item, want in zip(items, shape)):
        raise CounterScriptMismatch("the counter script is not the BIP199 HTLC template")
    raw_locktime = items[8]
    locktime = _script_number(raw_locktime) if isinstance(raw_locktime, bytes) else int(raw_locktime)
    try:
        htlc = Htlc(items[2], items[6], items[13], locktime)
    except InvalidSwap as exc:
        raise CounterScriptMismatch(f"the counter script is not the HTLC template: {exc}") from None
    if bytes(htlc.script) != bytes(script):   # pushes not minimal, or any other byte changed
        raise CounterScriptMismatch("the counter script is not the HTLC template byte for byte "
                                    "(non-minimal pushes?)")
    return htlc


def _script_number(data: bytes) -> int:
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(value & ~(0x80 << (8 * (len(data) - 1))))
    return value


Signer = Callable[[bytes], bytes]   # a 32-byte sighash -> a DER signature (without the sighash byte)


def spend_htlc(htlc: Htlc, outpoint: OutPoint, amount: Satoshis, pay_to: bytes, fee_rate: FeeRate,
               pubkey: bytes, sign: Signer, preimage: bytes | None = None) -> tuple[bytes, Satoshis]:
    """The signed transaction spending the HTLC at `outpoint` to `pay_to` (a scriptPubKey):
    a claim with `preimage`, else a refund (nLockTime = the locktime, non-final sequence).
    Returns (raw transaction, fee)."""
    if preimage is not None and sha256(preimage) != htlc.payment_hash:
        raise InvalidSwap("the preimage does not hash to the HTLC's payment hash")
    script = htlc.script
    tx = CMutableTransaction(
        [CMutableTxIn(COutPoint(lx(outpoint.txid.value), outpoint.vout), nSequence=NON_FINAL_SEQUENCE)],
        [CMutableTxOut(amount.value, CScript(pay_to))],
        nLockTime=0 if preimage is not None else htlc.locktime, nVersion=2)

    def witness(sig: bytes) -> CTxWitness:
        stack = [sig, pubkey, preimage, b"\x01", bytes(script)] if preimage is not None else \
            [sig, pubkey, b"", bytes(script)]
        return CTxWitness([CTxInWitness(CScriptWitness(stack))])

    tx.wit = witness(DUMMY_SIGNATURE)
    fee = fee_rate.fee_for(tx.get_virtual_size())
    keep = amount.value - fee.value
    if keep < 330:
        raise InvalidSwap(f"the HTLC's {amount.value} sat cannot pay a {fee.value} sat fee and leave "
                          "more than dust")
    tx.vout[0].nValue = keep
    sighash = SignatureHash(script, tx, 0, SIGHASH_ALL, amount=amount.value, sigversion=SIGVERSION_WITNESS_V0)
    tx.wit = witness(sign(bytes(sighash)) + bytes([SIGHASH_ALL]))
    return tx.serialize(), fee


def preimage_from(raw_tx: bytes, outpoint: OutPoint, htlc: Htlc) -> bytes | None:
    """The preimage revealed by `raw_tx`'s claim of the HTLC at `outpoint` (None: a refund,
    or `raw_tx` does not spend it)."""
    tx = CTransaction.deserialize(raw_tx)
    for i, txin in enumerate(tx.vin):
        if txin.prevout.hash != lx(outpoint.txid.value) or txin.prevout.n != outpoint.vout:
            continue
        stack = list(tx.wit.vtxinwit[i].scriptWitness.stack) if i < len(tx.wit.vtxinwit) else []
        if len(stack) == 5 and stack[3] == b"\x01" and sha256(stack[2]) == htlc.payment_hash:
            return bytes(stack[2])
    return None


def spends(raw_tx: bytes, outpoint: OutPoint) -> bool:
    tx = CTransaction.deserialize(raw_tx)
    return any(t.prevout.hash == lx(outpoint.txid.value) and t.prevout.n == outpoint.vout for t in tx.vin)


def txid_of(raw_tx: bytes) -> str:
    return CTransaction.deserialize(raw_tx).GetTxid()[::-1].hex()
