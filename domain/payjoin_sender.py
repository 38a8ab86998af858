"""The sender's side of PayJoin (BIP78 v1), pure: the original as sent, the checks, the filling.

A sender builds and signs an ordinary transaction (the *original*), POSTs it finalized to
the receiver's `pj=` endpoint and gets back a *proposal*: the same transaction with inputs
(and outputs) of the receiver's added. Before signing it again, the sender makes every check
BIP78's "Sender's payjoin proposal checklist" lists; each failure has a stable code (the
fallback reason: the original is broadcast instead). Nothing here talks to a network. The URI
and the request's query are domain/payjoin_uri.py.

Fallback reason codes raised by `check_proposal` (ProposalRefused.reason):
  invalid_proposal              not a PSBT, or not a transaction the original could become
  keypath_added                 a BIP32 (or BIP371) derivation or a global xpub in the proposal
  partial_sig_added             a partial signature on an input
  version_changed / locktime_changed
  input_changed                 one of our inputs missing, reordered or replaced
  sequence_changed              one of our inputs' sequence changed
  sequence_mixed                the receiver's inputs' sequences differ from ours
  sender_input_finalized        the receiver finalized (or signed) one of our inputs
  receiver_input_not_finalized  an input of the receiver's is not finalized
  receiver_input_no_utxo        an input of the receiver's carries no UTXO
  receiver_input_script_type    an input of the receiver's is not of our script type
  fee_decreased                 the absolute fee is below the original's
  output_missing                one of our outputs (change, another payout) is gone
  output_substituted            the payment output's script changed while substitution is off
  output_reduced                one of our outputs (or the payment, substitution off) pays less
  fee_contribution_too_high     our fee output lost more than maxadditionalfeecontribution
  fee_contribution_not_fee      ... more than the fee grew
  fee_contribution_not_inputs   ... more than the receiver's added inputs cost at our rate
and by `check_fee_rate` once our signatures are in: fee_rate_too_low (below minfeerate).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import attrs
from bitcointx import ChainParams
from bitcointx.core import CTransaction
from bitcointx.core.psbt import PartiallySignedTransaction
from bitcointx.core.script import CScript, CScriptInvalidError
from bitcointx.wallet import CCoinAddress, CCoinAddressError

from kaccy_bitcoin.domain.bitcoin import Network, OutPoint, Txid
from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.payjoin_uri import RequestParams
from kaccy_bitcoin.domain.psbt import (
    IN_TAP_BIP32_DERIVATION, IN_TAP_FIELDS, IN_TAP_KEY_SIG, OUT_TAP_BIP32_DERIVATION, OUT_TAP_INTERNAL_KEY, InvalidPsbt,
    input_kind, parse_psbt, spent_output)

_OUT_TAP_FIELDS = (OUT_TAP_INTERNAL_KEY, OUT_TAP_BIP32_DERIVATION)


class ProposalRefused(DomainError):
    """The receiver's proposal fails one of BIP78's sender checks; `reason` names which."""

    code = "payjoin_proposal_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# -- the original as sent ----------------------------------------------------------------------


def original_for_receiver(network: Network, finalized: str) -> str:
    """The finalized original without what the receiver has no need of (BIP78): key paths,
    partial signatures, global xpubs, unknown and proprietary fields. UTXO fields stay."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, finalized)
        if not all(inp.is_final() for inp in psbt.inputs):
            raise InvalidPsbt("the original must be finalized before it is sent to the receiver")
        psbt.xpubs = OrderedDict()
        psbt.unknown_fields, psbt.proprietary_fields = [], OrderedDict()
        for part in list(psbt.inputs) + list(psbt.outputs):
            part.derivation_map = OrderedDict()
            part.unknown_fields, part.proprietary_fields = [], OrderedDict()
        for inp in psbt.inputs:
            inp.partial_sigs = OrderedDict()
        return psbt.to_base64()


# -- the checks --------------------------------------------------------------------------------


@attrs.frozen
class SenderContext:
    """What the sender knows when a proposal comes back."""

    payment_script: bytes
    params: RequestParams
    input_vsize: int            # the virtual size of one input of our script type, once signed


@attrs.frozen
class CheckedProposal:
    receiver_inputs: tuple[int, ...]     # their indexes in the proposal
    our_inputs: tuple[int, ...]
    fee: Satoshis                        # the proposal's absolute fee
    contribution: Satoshis               # what our fee output gave


def _outpoint(txin) -> OutPoint:  # noqa: ANN001
    return OutPoint(Txid(txin.prevout.hash[::-1].hex()), txin.prevout.n)


def _refuse(reason: str, message: str) -> ProposalRefused:
    return ProposalRefused(reason, message)


def _has_keypaths(part) -> bool:  # noqa: ANN001
    return bool(part.derivation_map) or any(f.key_type == IN_TAP_BIP32_DERIVATION for f in part.unknown_fields)


def _input_amount(psbt: PartiallySignedTransaction, n: int) -> int:
    out = spent_output(psbt, n)
    if out is None:
        raise _refuse("receiver_input_no_utxo", f"input {n} carries neither witness_utxo nor non_witness_utxo")
    return out.nValue


def check_proposal(network: Network, original: str, proposal: str, ctx: SenderContext) -> CheckedProposal:
    """Every check of BIP78's sender checklist that can be made before we sign, in its order.
    `original`: the finalized original as we sent it (with its UTXO fields). The proposal is a
    stranger's bytes: whatever python-bitcointx or our amounts make of malformed ones (a truncated
    script, inconsistent final fields, an input worth more than 21 million BTC) is refused as
    `invalid_proposal`, so that the original is sent."""
    try:
        return _check_proposal(network, original, proposal, ctx)
    except ProposalRefused:
        raise
    except (ValueError, ArithmeticError, IndexError, KeyError, TypeError, CScriptInvalidError, DomainError) as exc:
        raise _refuse("invalid_proposal", f"the proposal cannot be read: {exc}") from None


def _check_proposal(network: Network, original: str, proposal: str, ctx: SenderContext) -> CheckedProposal:
    with ChainParams(network.chain_params):
        orig = parse_psbt(network, original)
        try:
            prop = parse_psbt(network, proposal, relaxed=True)
        except InvalidPsbt as exc:
            raise _refuse("invalid_proposal", str(exc)) from None
        otx, ptx = orig.unsigned_tx, prop.unsigned_tx
        if prop.xpubs:
            raise _refuse("keypath_added", "the proposal carries global xpubs")
        if ptx.nVersion != otx.nVersion:
            raise _refuse("version_changed", f"version {ptx.nVersion}, the original's {otx.nVersion}")
        if ptx.nLockTime != otx.nLockTime:
            raise _refuse("locktime_changed", f"locktime {ptx.nLockTime}, the original's {otx.nLockTime}")
        our_kind = input_kind_of_final(orig, 0)
        ours, theirs, sequences = [], [], set()
        queue = list(range(len(otx.vin)))
        original_outpoints = [_outpoint(i) for i in otx.vin]
        proposed = [_outpoint(i) for i in ptx.vin]
        for point in original_outpoints:
            if point not in proposed:
                raise _refuse("input_changed", f"our input {point} is not in the proposal")
        for n, (txin, inp) in enumerate(zip(ptx.vin, prop.inputs)):
            if _has_keypaths(inp):
                raise _refuse("keypath_added", f"input {n} carries key paths")
            if inp.partial_sigs or any(f.key_type == IN_TAP_KEY_SIG for f in inp.unknown_fields):
                raise _refuse("partial_sig_added", f"input {n} carries a partial signature")
            point = _outpoint(txin)
            if queue and point == _outpoint(otx.vin[queue[0]]):
                k = queue.pop(0)
                if txin.nSequence != otx.vin[k].nSequence:
                    raise _refuse("sequence_changed", f"our input {n} has sequence {txin.nSequence:#x}, "
                                                      f"the original's {otx.vin[k].nSequence:#x}")
                if inp.is_final():
                    raise _refuse("sender_input_finalized", f"our input {n} was finalized by the receiver")
                ours.append(n)
                sequences.add(txin.nSequence)
                continue
            if point in original_outpoints:
                raise _refuse("input_changed", f"input {n} spends our {point} out of the original's order")
            if not inp.is_final():
                raise _refuse("receiver_input_not_finalized", f"the receiver's input {n} is not finalized")
            _input_amount(prop, n)
            kind = input_kind_of_final(prop, n)
            if kind != our_kind:
                raise _refuse("receiver_input_script_type",
                              f"the receiver's input {n} is {kind or 'of an unknown type'}, ours {our_kind}")
            theirs.append(n)
            sequences.add(txin.nSequence)
        if queue:
            raise _refuse("input_changed", f"our input {_outpoint(otx.vin[queue[0]])} is not in the proposal")
        if len(sequences) > 1:
            raise _refuse("sequence_mixed", "the proposal's inputs do not all have the same sequence")
        original_in = sum(_input_amount(orig, n) for n in range(len(otx.vin)))
        original_fee = original_in - sum(o.nValue for o in otx.vout)
        proposal_in = (original_in + sum(_input_amount(prop, n) for n in theirs))
        proposal_fee = proposal_in - sum(o.nValue for o in ptx.vout)
        if proposal_fee < original_fee:
            raise _refuse("fee_decreased", f"the proposal pays {proposal_fee} sat of fee, the original {original_fee}")
        contribution = _check_outputs(orig, prop, ctx, original_fee, proposal_fee, len(theirs))
        return CheckedProposal(tuple(theirs), tuple(ours), Satoshis(proposal_fee), Satoshis(contribution))


def input_kind_of_final(psbt: PartiallySignedTransaction, n: int) -> str | None:
    """The script type an input spends, final or not (a final P2SH-P2WPKH input keeps its
    redeem script only in its scriptSig)."""
    kind = input_kind(psbt, n)
    if kind is not None:
        return kind
    out = spent_output(psbt, n)
    if out is None:
        return None
    inp = psbt.inputs[n]
    if out.scriptPubKey.is_p2sh() and inp.is_final():
        pushes = list(CScript(inp.final_script_sig))
        if len(pushes) == 1 and isinstance(pushes[0], bytes) and CScript(pushes[0]).is_witness_v0_keyhash():
            return "p2sh-p2wpkh"
    if out.scriptPubKey.is_witness_v0_scripthash():
        return "p2wsh"
    return None


def _check_outputs(orig: PartiallySignedTransaction, prop: PartiallySignedTransaction, ctx: SenderContext,
                   original_fee: int, proposal_fee: int, added_inputs: int) -> int:
    otx, ptx = orig.unsigned_tx, prop.unsigned_tx
    params = ctx.params
    queue = list(range(len(otx.vout)))
    contribution = 0
    for n, (txout, out) in enumerate(zip(ptx.vout, prop.outputs)):
        if out.derivation_map or any(f.key_type in _OUT_TAP_FIELDS for f in out.unknown_fields):
            raise _refuse("keypath_added", f"output {n} carries key paths")
        if not queue:
            continue
        k = queue[0]
        expected = otx.vout[k]
        is_payment = bytes(expected.scriptPubKey) == ctx.payment_script
        if bytes(txout.scriptPubKey) != bytes(expected.scriptPubKey):
            if is_payment and params.output_substitution:
                queue.pop(0)            # the receiver moved its own payment: allowed
            continue                    # an output the receiver added
        queue.pop(0)
        if k == params.fee_output_index:
            contribution = expected.nValue - txout.nValue
            if contribution > params.max_additional_fee.value:
                raise _refuse("fee_contribution_too_high",
                              f"our output {n} gave {contribution} sat, more than the "
                              f"{params.max_additional_fee.value} sat we allowed")
            if contribution > proposal_fee - original_fee:
                raise _refuse("fee_contribution_not_fee",
                              f"our output {n} gave {contribution} sat, the fee grew by {proposal_fee - original_fee}")
            # what the added inputs cost at the original's fee rate (BIP78), rounded up
            original_vsize = CTransaction.deserialize(orig.extract_transaction().serialize()).get_virtual_size()
            allowed = -(-original_fee * ctx.input_vsize * added_inputs // original_vsize)
            if contribution > allowed:
                raise _refuse("fee_contribution_not_inputs",
                              f"our output {n} gave {contribution} sat, the {added_inputs} added input(s) "
                              f"cost {allowed} sat at the original's rate")
        elif is_payment and params.output_substitution:
            pass                        # the receiver's own output: it may lower it
        elif txout.nValue < expected.nValue:
            raise _refuse("output_reduced", f"output {n} pays {txout.nValue} sat, the original {expected.nValue}")
    if queue:
        missing = otx.vout[queue[0]]
        if bytes(missing.scriptPubKey) == ctx.payment_script and not params.output_substitution:
            raise _refuse("output_substituted", "the payment output is not in the proposal and substitution "
                                                "is disabled (pjos=0)")
        raise _refuse("output_missing", f"our output {queue[0]} ({missing.nValue} sat) is not in the proposal")
    return contribution


def fill_our_inputs(network: Network, proposal: str, template: str, ours: Sequence[int]) -> str:
    """The proposal with our inputs' UTXO, scripts and key paths restored from `template` (our
    PSBT before it was finalized), in the original's order, so that our signer can sign them."""
    with ChainParams(network.chain_params):
        prop = parse_psbt(network, proposal, relaxed=True)
        tmpl = parse_psbt(network, template)
        for k, n in enumerate(ours):
            src, dst = tmpl.inputs[k], prop.inputs[n]
            dst.set_utxo(src.utxo, prop.unsigned_tx)
            dst.redeem_script, dst.witness_script = src.redeem_script, src.witness_script
            dst.derivation_map = OrderedDict(src.derivation_map)
            dst.unknown_fields = [f for f in src.unknown_fields if f.key_type in IN_TAP_FIELDS]
        return prop.to_base64()


def check_fee_rate(network: Network, raw_tx: bytes, fee: Satoshis, minimum: FeeRate) -> FeeRate:
    """The signed proposal's fee rate, refused (fee_rate_too_low) below `minimum` (minfeerate)."""
    with ChainParams(network.chain_params):
        vsize = CTransaction.deserialize(raw_tx).get_virtual_size()
    rate = FeeRate(fee.value * 1000 // vsize)
    if rate < minimum:
        raise _refuse("fee_rate_too_low", f"the signed proposal pays {rate}, below the minfeerate {minimum}")
    return rate


def address_of(network: Network, script: bytes) -> str:
    """An output's address, or `script:<hex>` for a script no address stands for."""
    with ChainParams(network.chain_params):
        try:
            return str(CCoinAddress.from_scriptPubKey(CScript(script)))
        except CCoinAddressError:
            return f"script:{script.hex()}"


def original_size(network: Network, finalized: str) -> tuple[Satoshis, int]:
    """The finalized original's fee and virtual size."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, finalized)
        vsize = CTransaction.deserialize(psbt.extract_transaction().serialize()).get_virtual_size()
        return Satoshis(psbt.get_fee()), vsize


def proposal_spends(network: Network, signed: str) -> list[tuple[OutPoint, Satoshis]]:
    """Every input of the (filled, signed) proposal with its amount, in order."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, signed)
        return [(_outpoint(txin), Satoshis(_input_amount(psbt, n))) for n, txin in enumerate(psbt.unsigned_tx.vin)]


def proposal_outputs(network: Network, signed: str, change_scripts: Sequence[bytes]) -> list[tuple[str, int, bool]]:
    """Every output of the proposal, in order: (address, amount, whether it is our change)."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, signed)
        return [(address_of(network, bytes(o.scriptPubKey)), o.nValue, bytes(o.scriptPubKey) in change_scripts)
                for o in psbt.unsigned_tx.vout]
