"""PayJoin (BIP78 v1), the receiver's rules: what the sender asks, what its original may be, and
the proposal we answer with. Pure: python-bitcointx's PSBT, no node, no keys.

The proposal keeps the original's inputs, outputs, version, locktime and sequences; one coin of
ours is inserted among the inputs (signed and finalized by the caller, the only input carrying
its UTXO); our output to the order's address grows by that coin's value less any fee we pay.
The fee rate never drops below the original's (nor the sender's `minfeerate`): the sender pays
for our input from `additionalfeeoutputindex` up to `maxadditionalfeecontribution` (and never
more than the original's fee rate times our input's size, which is all BIP78 lets it pay for),
we pay the rest out of our coin.
"""
from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from fractions import Fraction
from typing import Mapping

import attrs
from bitcointx import ChainParams
from bitcointx.core import CMutableTransaction, CMutableTxIn, CMutableTxOut, COutPoint, CTransaction, lx
from bitcointx.core.psbt import PartiallySignedTransaction
from bitcointx.core.script import CScript

from kaccy_bitcoin.domain.bitcoin import Network, OutPoint, Txid
from kaccy_bitcoin.domain.payjoin_session import PayjoinRefused, rejected, unavailable
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.psbt import (
    P2SH_P2WPKH,
    P2TR,
    P2WPKH,
    InvalidPsbt,
    KeyOrigin,
    PsbtInputSpec,
    fill_input,
    finalize_input,
    parse_psbt,
    spent_output,
)

SUPPORTED_VERSIONS = (1,)
MAX_ORIGINAL_BYTES = 100_000        # the /pj body limit, whatever KACCY_API_MAX_BODY says
# Weight of one input of each type we can add, signatures at their largest (as coin selection counts).
INPUT_WEIGHT = {P2WPKH: 272, P2SH_P2WPKH: 364, P2TR: 230}
_MIN_SENDER_OUTPUT = 546            # a fee output is never lowered below this
MAX_MIN_FEE_RATE = 1_000_000        # sat/vB: a minfeerate above it cannot be kept by any coin


@attrs.frozen
class PayjoinParams:
    """The sender's query parameters (BIP78 "Optional parameters")."""

    fee_output: int | None = None          # additionalfeeoutputindex
    max_fee_contribution: int | None = None  # maxadditionalfeecontribution, sat
    min_fee_rate: Fraction | None = None   # minfeerate, sat/vB
    output_substitution: bool = True       # False: disableoutputsubstitution=true

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> PayjoinParams:
        """Version-unsupported for any v but 1 (absent: 1, as BIP78 says); a fee output index or
        contribution that is not a whole number, or negative, is ignored as BIP78 asks; a
        minfeerate that is not a number refuses the original."""
        v = query.get("v", "1").strip()
        if v not in tuple(str(s) for s in SUPPORTED_VERSIONS):
            raise PayjoinRefused("version-unsupported", f"payjoin version {v!r} is not supported",
                                 supported=list(SUPPORTED_VERSIONS))
        index, contribution = _whole(query.get("additionalfeeoutputindex")), \
            _whole(query.get("maxadditionalfeecontribution"))
        rate = _min_fee_rate(query.get("minfeerate"))
        disable = query.get("disableoutputsubstitution", "false").strip().lower() in ("true", "1")
        if index is None or contribution is None:
            index = contribution = None
        return cls(index, contribution, rate, not disable)


def _whole(text: str | None) -> int | None:
    if text is None or not (text.strip().isascii() and text.strip().isdigit()):
        return None
    return int(text.strip())


def _min_fee_rate(text: str | None) -> Fraction | None:
    """minfeerate in sat/vB, rounded up to the msat/vB; None when absent or negative. The endpoint
    has no API key: the number is bounded before any exact arithmetic (`1e999999999` would
    otherwise be a ten-to-the-billion integer), and a rate no coin could pay is `not-enough-money`."""
    if text is None or not text.strip():
        return None
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        rate = Decimal("NaN")
    if not rate.is_finite():
        raise rejected(f"minfeerate {text[:40]!r} is not a number of sat/vB")
    if rate < 0:
        return None
    if rate > MAX_MIN_FEE_RATE:
        raise PayjoinRefused("not-enough-money", f"minfeerate {text[:40]!r} is over {MAX_MIN_FEE_RATE} sat/vB")
    return Fraction(int((rate * 1000).to_integral_value(ROUND_CEILING)), 1000)


@attrs.frozen
class Original:
    """The sender's original transaction, checked: finalized, UTXOs known, paying the order once."""

    psbt: str
    raw: bytes
    txid: Txid
    fee: int
    weight: int
    kind: str                       # the script type of every input
    inputs: tuple[OutPoint, ...]
    payment_vout: int
    payment_sat: int

    @property
    def vsize(self) -> int:
        return (self.weight + 3) // 4

    @property
    def fee_rate(self) -> Fraction:
        return Fraction(self.fee, self.vsize)


def _final_kind(spk: CScript, script_sig: bytes, witness_items: int) -> str | None:
    if spk.is_witness_v0_keyhash():
        return P2WPKH
    if spk.is_witness_v1_taproot() and witness_items == 1:
        return P2TR
    if spk.is_p2sh() and len(script_sig) == 23 and witness_items == 2:
        return P2SH_P2WPKH
    return None


def tx_weight(tx: CTransaction) -> int:
    return len(tx.serialize(include_witness=False)) * 3 + len(tx.serialize())


def read_original(network: Network, text: str, payee_script: bytes) -> Original:
    """The original checked as BIP78's receiver must, or `original-psbt-rejected` naming why."""
    with ChainParams(network.chain_params):
        try:
            psbt = parse_psbt(network, text.strip())
        except InvalidPsbt as exc:
            raise rejected(f"the body is not a PSBT: {exc}") from None
        kinds, total_in = set(), 0
        for n, inp in enumerate(psbt.inputs):
            if not inp.is_final():
                raise rejected(f"input {n} is not finalized")
            try:
                out = spent_output(psbt, n)
            except InvalidPsbt as exc:
                raise rejected(str(exc)) from None
            if out is None:
                raise rejected(f"input {n} has neither witness_utxo nor non_witness_utxo")
            total_in += out.nValue
            witness = inp.final_script_witness
            kinds.add(_final_kind(out.scriptPubKey, bytes(inp.final_script_sig),
                                  len(witness.stack) if witness is not None else 0))
        try:
            tx = psbt.extract_transaction()
        except (ValueError, AssertionError) as exc:
            raise rejected(f"the transaction cannot be extracted: {exc}") from None
        fee = total_in - sum(o.nValue for o in tx.vout)
        if fee <= 0:
            raise rejected("the original pays no fee")
        paying = [n for n, o in enumerate(tx.vout) if bytes(o.scriptPubKey) == payee_script]
        if len(paying) != 1:
            raise rejected("the original does not pay the order's address" if not paying
                           else "the original pays the order's address more than once")
        if len(kinds) != 1 or None in kinds:
            raise unavailable("the original's inputs are not all of one script type we can join "
                              "(P2WPKH, P2SH-P2WPKH or P2TR)")
        return Original(text.strip(), tx.serialize(), Txid(tx.GetTxid()[::-1].hex()), fee, tx_weight(tx),
                        kinds.pop(), tuple(OutPoint(Txid(i.prevout.hash[::-1].hex()), i.prevout.n) for i in tx.vin),
                        paying[0], tx.vout[paying[0]].nValue)


@attrs.frozen
class OurCoin:
    outpoint: OutPoint
    amount: Satoshis
    script_pubkey: bytes
    kind: str
    origin: KeyOrigin


@attrs.frozen
class Proposal:
    """The proposal before our signature: `psbt` still holds the sender's UTXOs (a signer needs
    them, a taproot one all of them); `finish` strips them once our input is signed."""

    psbt: str
    our_index: int
    contributed_sat: int     # our coin's value less the fee we pay: what our output grew by
    sender_fee_sat: int      # taken from the sender's fee output
    our_fee_sat: int


def fees(original: Original, coin_kind: str, params: PayjoinParams, fee_output_value: int | None) -> tuple[int, int]:
    """(sender's contribution, our part) of the fee our input adds, so the proposal's fee rate is
    at least the original's and the sender's minfeerate."""
    weight = INPUT_WEIGHT[coin_kind]
    rate = max(original.fee_rate, params.min_fee_rate or Fraction(0))
    needed = math.ceil(rate * ((original.weight + weight + 3) // 4))
    extra = max(0, needed - original.fee)
    sender = 0
    if fee_output_value is not None and params.max_fee_contribution is not None:
        cap = math.floor(Fraction(original.fee * weight, 4 * original.vsize))   # BIP78's limit
        sender = max(0, min(extra, params.max_fee_contribution, cap, fee_output_value - _MIN_SENDER_OUTPUT))
    return sender, extra - sender


def build_proposal(network: Network, original: Original, coin: OurCoin, params: PayjoinParams,
                   position: int) -> Proposal:
    """The unsigned proposal with our coin at input `position`; `not-enough-money` when our coin
    cannot pay its share of the fee."""
    if coin.kind != original.kind:
        raise unavailable(f"the original's inputs are {original.kind}; ours are {coin.kind}")
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, original.psbt)
        tx = psbt.unsigned_tx
        fee_output = params.fee_output
        if fee_output is not None and (fee_output >= len(tx.vout) or fee_output == original.payment_vout):
            fee_output = None   # BIP78: ignored
        sender, ours = fees(original, coin.kind, params, tx.vout[fee_output].nValue if fee_output is not None else None)
        contributed = coin.amount.value - ours
        if contributed <= 0:
            raise PayjoinRefused("not-enough-money", "our coin cannot pay for its share of the fee")
        vout = [CMutableTxOut(o.nValue, o.scriptPubKey) for o in tx.vout]
        vout[original.payment_vout].nValue += contributed
        if fee_output is not None:
            vout[fee_output].nValue -= sender
        vin = [CMutableTxIn(i.prevout, nSequence=i.nSequence) for i in tx.vin]
        position = max(0, min(position, len(vin)))
        vin.insert(position, CMutableTxIn(COutPoint(lx(coin.outpoint.txid.value), coin.outpoint.vout),
                                          nSequence=tx.vin[0].nSequence))
        new = CMutableTransaction(vin=vin, vout=vout, nLockTime=tx.nLockTime, nVersion=tx.nVersion)
        proposal = PartiallySignedTransaction(unsigned_tx=new)
        for n in range(len(vin)):
            if n == position:
                fill_input(proposal, n, PsbtInputSpec(coin.outpoint, coin.amount, coin.script_pubkey,
                                                             origin=coin.origin))
            else:
                src = n if n < position else n - 1
                proposal.set_utxo(spent_output(psbt, src), n, force_witness_utxo=True)
        return Proposal(proposal.to_base64(), position, contributed, sender, ours)


def finish_proposal(network: Network, signed: str, our_index: int,
                    script_sigs: Mapping[int, bytes]) -> tuple[str, Txid]:
    """The proposal as sent: our input finalized and alone with its UTXO; every other input bare
    (the sender restores its own from the original). Returns it and its txid."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, signed)
        if not finalize_input(psbt, our_index):
            raise InvalidPsbt("our input of the proposal is not signed")
        ours = psbt.inputs[our_index]
        out = PartiallySignedTransaction(unsigned_tx=psbt.unsigned_tx)
        out.set_utxo(ours.witness_utxo, our_index, force_witness_utxo=True)
        out.inputs[our_index].final_script_sig = ours.final_script_sig
        out.inputs[our_index].final_script_witness = ours.final_script_witness
        return out.to_base64(), proposal_txid(network, out.to_base64(), script_sigs)


def proposal_txid(network: Network, proposal: str, script_sigs: Mapping[int, bytes]) -> Txid:
    """The txid the proposal's transaction will have: segwit inputs sign outside it, so only the
    scriptSigs count (ours from the proposal; a P2SH-P2WPKH sender's from `script_sigs`, else
    the push of its redeem script, which the original holds)."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, proposal)
        tx = psbt.unsigned_tx.to_mutable()
        for n, inp in enumerate(psbt.inputs):
            if inp.is_final():
                tx.vin[n].scriptSig = CScript(inp.final_script_sig)
            elif n in script_sigs:
                tx.vin[n].scriptSig = CScript(script_sigs[n])
        return Txid(tx.GetTxid()[::-1].hex())


def sender_script_sigs(network: Network, original: Original, proposal: str) -> dict[int, bytes]:
    """Each sender input's final scriptSig (from the original), by its index in the proposal."""
    with ChainParams(network.chain_params):
        orig = CTransaction.deserialize(original.raw)
        sigs = {(bytes(i.prevout.hash), i.prevout.n): bytes(i.scriptSig) for i in orig.vin}
        psbt = parse_psbt(network, proposal)
        return {n: sigs[(bytes(i.prevout.hash), i.prevout.n)] for n, i in enumerate(psbt.unsigned_tx.vin)
                if (bytes(i.prevout.hash), i.prevout.n) in sigs}


def added_inputs(network: Network, original: str, proposal: str) -> list[int]:
    """The proposal's inputs that are not the original's (what the receiver added), after
    checking the proposal keeps the original's inputs in order, its sequences, version, locktime
    and every output the sender had (the receiver's own may grow): the shape BIP78 gives it."""
    with ChainParams(network.chain_params):
        a, b = parse_psbt(network, original).unsigned_tx, parse_psbt(network, proposal).unsigned_tx
        if (a.nVersion, a.nLockTime) != (b.nVersion, b.nLockTime):
            raise InvalidPsbt("version or locktime changed")
        theirs = [(i.prevout, i.nSequence) for i in a.vin]
        kept = [(i.prevout, i.nSequence) for i in b.vin if any(i.prevout == p for p, _ in theirs)]
        if kept != theirs:
            raise InvalidPsbt("the original's inputs are not all kept, in order, with their sequences")
        if len({i.nSequence for i in b.vin}) != 1:
            raise InvalidPsbt("the proposal's inputs do not share one sequence")
        if len(a.vout) != len(b.vout) or any(x.scriptPubKey != y.scriptPubKey for x, y in zip(a.vout, b.vout)):
            raise InvalidPsbt("the outputs are not the original's")
        return [n for n, i in enumerate(b.vin) if all(i.prevout != p for p, _ in theirs)]


def output_values(network: Network, text: str) -> list[int]:
    with ChainParams(network.chain_params):
        return [o.nValue for o in parse_psbt(network, text).unsigned_tx.vout]

