"""Building, inspecting, checking and finalizing PSBTs (BIP174, BIP371) with python-bitcointx.

Pure computation: no keys, no node. Every input carries what a signer needs for its
script type: P2WPKH a witness UTXO and its BIP32 derivation; P2SH-P2WPKH also its redeem
script; P2PKH the whole funding transaction (non_witness_utxo); BIP86 P2TR a witness UTXO
and the BIP371 internal key and taproot derivation. python-bitcointx 1.1.5 knows nothing
of BIP371, so those fields are kept as its unknown-type entries (they survive parsing,
serializing and merging: domain/psbt_signatures.py keeps one value per key, and verifies every
signature before any is accepted). Every input signals RBF (BIP125); the locktime is set
against fee sniping.
"""
from __future__ import annotations

import binascii
from collections import OrderedDict
from typing import Sequence

import attrs
from bitcointx import ChainParams
from bitcointx.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxOut,
    COutPoint,
    CTransaction,
    CTxInWitness,
    CTxOut,
    CTxWitness,
    lx,
)
from bitcointx.core.key import BIP32Path, CPubKey, KeyStore, XOnlyPubKey
from bitcointx.core.psbt import PartiallySignedTransaction, PSBT_Input, PSBT_KeyDerivationInfo, PSBT_UnknownTypeData
from bitcointx.core.script import (
    SIGHASH_ALL,
    CScript,
    CScriptWitness,
    SignatureHashSchnorr,
    parse_standard_multisig_redeem_script,
)
from bitcointx.core.serialize import SerializationError, VarIntSerializer
from bitcointx.wallet import P2PKHCoinAddress, P2TRCoinAddress, P2WPKHCoinAddress

from kaccy_bitcoin.domain.bitcoin import DerivationPath, Network, OutPoint, Txid
from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.money import Satoshis

RBF_SEQUENCE = 0xFFFFFFFD

# BIP371 key types (python-bitcointx keeps them as unknown-type entries).
IN_TAP_KEY_SIG = 0x13
IN_TAP_BIP32_DERIVATION = 0x16
IN_TAP_INTERNAL_KEY = 0x17
IN_TAP_MERKLE_ROOT = 0x18
IN_TAP_FIELDS = frozenset(range(0x13, 0x19))      # key sig .. merkle root: cleared by the finalizer
OUT_TAP_INTERNAL_KEY = 0x05
OUT_TAP_BIP32_DERIVATION = 0x07
SIGHASH_DEFAULT = 0

# Input kinds, from the script a PSBT input spends.
P2WPKH, P2SH_P2WPKH, P2PKH, P2TR, P2WSH = "p2wpkh", "p2sh-p2wpkh", "p2pkh", "p2tr", "p2wsh"

# `analyzepsbt` sizes an unsigned input with Bitcoin Core's dummy signatures: a 71-byte
# ECDSA signature (DummySignatureCreator(32, 32): DER with 32-byte r and s, plus the
# sighash byte: what low-R signers such as Core and python-bitcointx produce) and a
# 64-byte Schnorr signature. estimated_vsize does the same, so the two agree. A signer
# that does not grind low R makes 72-byte signatures: 1 vbyte more per P2PKH input, 1
# weight unit per segwit v0 input; coin selection (domain/coin_selection.py) prices
# inputs at that worst case, so the fee rate never falls below the one asked for.
DUMMY_ECDSA_SIGNATURE = bytes(71)
DUMMY_SCHNORR_SIGNATURE = bytes(64)
_DUMMY_PUBKEY = b"\x02" + bytes(32)


class InvalidPsbt(DomainError):
    code = "invalid_psbt"


class BadSignature(DomainError):
    """A partial signature from a key the input does not name, or one that does not verify."""

    code = "bad_signature"


class PsbtMismatch(DomainError):
    """The PSBT does not spend and pay exactly what the withdrawal recorded: never sign or
    broadcast it."""

    code = "psbt_mismatch"


@attrs.frozen
class KeyOrigin:
    fingerprint: str          # 8 hex characters of the master key fingerprint
    path: DerivationPath
    pubkey: bytes             # compressed (33 bytes); a taproot key uses its x-only half


@attrs.frozen
class PsbtInputSpec:
    outpoint: OutPoint
    amount: Satoshis
    script_pubkey: bytes
    origin: KeyOrigin | None = None
    funding_tx: bytes | None = None     # the whole previous transaction: required to spend P2PKH
    witness_script: bytes | None = None  # P2WSH multisig: the script, and every cosigner's key origin
    cosigners: tuple[KeyOrigin, ...] = ()


@attrs.frozen
class PsbtOutputSpec:
    script_pubkey: bytes
    amount: Satoshis
    origin: KeyOrigin | None = None     # set for our own change output
    witness_script: bytes | None = None  # our own P2WSH multisig change: its script and keys
    cosigners: tuple[KeyOrigin, ...] = ()


@attrs.frozen
class PsbtStatus:
    inputs: int
    inputs_signed: int     # with at least one signature, or final
    inputs_final: int
    complete: bool         # every input is final or can be finalized from its signatures
    fee: Satoshis | None
    signatures: int = 0    # partial signatures over all inputs (a multisig input may hold several)


# -- BIP371 fields --------------------------------------------------------------------


def _derivation_info(origin: KeyOrigin) -> PSBT_KeyDerivationInfo:
    return PSBT_KeyDerivationInfo(bytes.fromhex(origin.fingerprint),
                                  BIP32Path(list(origin.path.indexes), is_partial=False))


def _tap_field(key_type: int, key: bytes, value: bytes) -> PSBT_UnknownTypeData:
    return PSBT_UnknownTypeData(key_type=key_type, key_data=key, value=value)


def _tap_derivation_value(origin: KeyOrigin) -> bytes:
    """No leaf hashes (a key-path key), then fingerprint and path as in BIP174."""
    return VarIntSerializer.serialize(0) + _derivation_info(origin).serialize()


def tap_key_derivations(entry: PSBT_Input) -> list[tuple[bytes, PSBT_KeyDerivationInfo]]:
    """The (x-only key, origin) pairs of an input's key-path taproot derivations."""
    found = []
    for field in entry.unknown_fields:
        if field.key_type != IN_TAP_BIP32_DERIVATION or len(field.key_data) != 32:
            continue
        try:
            leaves, rest = VarIntSerializer.deserialize_partial(field.value)
            if leaves:
                continue     # a script-path key: not ours to sign
            found.append((field.key_data, PSBT_KeyDerivationInfo.deserialize(rest)))
        except (SerializationError, ValueError) as exc:
            raise InvalidPsbt(f"malformed taproot derivation in an input: {exc}") from None
    return found


def _single(entry: PSBT_Input, key_type: int) -> bytes | None:
    return next((f.value for f in entry.unknown_fields if f.key_type == key_type and not f.key_data), None)


def tap_internal_key(entry: PSBT_Input) -> bytes | None:
    return _single(entry, IN_TAP_INTERNAL_KEY)


def tap_merkle_root(entry: PSBT_Input) -> bytes | None:
    return _single(entry, IN_TAP_MERKLE_ROOT)


def tap_key_sig(entry: PSBT_Input) -> bytes | None:
    return _single(entry, IN_TAP_KEY_SIG)


def set_tap_key_sig(entry: PSBT_Input, signature: bytes) -> None:
    entry.unknown_fields = [f for f in entry.unknown_fields if f.key_type != IN_TAP_KEY_SIG]
    entry.unknown_fields.append(_tap_field(IN_TAP_KEY_SIG, b"", signature))


# -- reading inputs ---------------------------------------------------------------------


def spent_output(psbt: PartiallySignedTransaction, n: int) -> CTxOut | None:
    """The output input `n` spends, from its witness UTXO or its funding transaction."""
    inp = psbt.inputs[n]
    if inp.witness_utxo is not None:
        return inp.witness_utxo
    if isinstance(inp.utxo, CTransaction):
        prevout = psbt.unsigned_tx.vin[n].prevout
        if inp.utxo.GetTxid() != prevout.hash or prevout.n >= len(inp.utxo.vout):
            raise InvalidPsbt(f"input {n}: its funding transaction is not the one it spends")
        return inp.utxo.vout[prevout.n]
    return None


def input_kind(psbt: PartiallySignedTransaction, n: int) -> str | None:
    """P2WPKH, P2SH_P2WPKH, P2PKH or P2TR for a not yet final input of those types; None otherwise."""
    out = spent_output(psbt, n)
    if out is None:
        return None
    spk = out.scriptPubKey
    if spk.is_witness_v0_keyhash():
        return P2WPKH
    if spk.is_witness_v1_taproot():
        return P2TR
    if spk.is_p2pkh():
        return P2PKH
    if spk.is_p2sh():
        if psbt.inputs[n].redeem_script.is_witness_v0_keyhash():
            return P2SH_P2WPKH
    if spk.is_witness_v0_scripthash() and psbt.inputs[n].witness_script:
        return P2WSH
    return None


def taproot_key_path_sighash(psbt: PartiallySignedTransaction, n: int, hashtype: int | None = None) -> bytes:
    """BIP341 signature hash of input `n` for a key-path spend (SIGHASH_DEFAULT unless `hashtype`)."""
    spent = [spent_output(psbt, i) for i in range(len(psbt.inputs))]
    if any(s is None for s in spent):
        raise InvalidPsbt("a taproot signature commits to every spent output: an input has no UTXO")
    return SignatureHashSchnorr(psbt.unsigned_tx, n, spent, hashtype=hashtype)


# -- building ----------------------------------------------------------------------------


def _expected_script(kind_spk: CScript, pubkey: bytes) -> CScript:
    pub = CPubKey(pubkey)
    if kind_spk.is_witness_v1_taproot():
        return P2TRCoinAddress.from_xonly_pubkey(XOnlyPubKey(pub)).to_scriptPubKey()
    if kind_spk.is_p2pkh():
        return P2PKHCoinAddress.from_pubkey(pub).to_scriptPubKey()
    wpkh = P2WPKHCoinAddress.from_pubkey(pub).to_scriptPubKey()
    return wpkh.to_p2sh_scriptPubKey() if kind_spk.is_p2sh() else wpkh


def multisig_keys(script: CScript, what: str) -> list[bytes]:
    try:
        return [bytes(k) for k in parse_standard_multisig_redeem_script(script).pubkeys]
    except ValueError as exc:
        raise InvalidPsbt(f"{what}: its witness script is not a standard multisig script ({exc})") from None


def _add_multisig_fields(entry, spk: CScript, script: bytes | None, cosigners: Sequence[KeyOrigin],  # noqa: ANN001
                         what: str) -> None:
    """The witness script and every cosigner's BIP32 derivation of a P2WSH multisig input or output."""
    if script is None or CScript(script).to_p2wsh_scriptPubKey() != spk:
        raise InvalidPsbt(f"{what}: a P2WSH script needs the witness script it commits to")
    keys = multisig_keys(CScript(script), what)
    if sorted(c.pubkey for c in cosigners) != sorted(keys):
        raise InvalidPsbt(f"{what}: the cosigners' keys are not the keys of its witness script")
    entry.witness_script = CScript(script)
    for origin in cosigners:
        entry.derivation_map[CPubKey(origin.pubkey)] = _derivation_info(origin)


def _add_input_fields(psbt: PartiallySignedTransaction, n: int, spec: PsbtInputSpec) -> None:
    spk = CScript(spec.script_pubkey)
    inp = psbt.inputs[n]
    if spk.is_witness_v0_scripthash():
        psbt.set_utxo(CTxOut(spec.amount.value, spk), n, force_witness_utxo=True)
        _add_multisig_fields(inp, spk, spec.witness_script, spec.cosigners, f"input {spec.outpoint}")
        return
    if not (spk.is_witness_v0_keyhash() or spk.is_p2sh() or spk.is_p2pkh() or spk.is_witness_v1_taproot()):
        raise InvalidPsbt(f"input {spec.outpoint}: cannot spend a script of this type ({spk.hex()})")
    if spec.origin is not None and _expected_script(spk, spec.origin.pubkey) != spk:
        raise InvalidPsbt(f"input {spec.outpoint}: its key {spec.origin.pubkey.hex()} "
                          "does not give the script it spends")
    if spk.is_p2pkh():
        if spec.funding_tx is None:
            raise InvalidPsbt(f"input {spec.outpoint}: spending P2PKH needs the whole funding transaction")
        prev = CTransaction.deserialize(spec.funding_tx)
        if (prev.GetTxid()[::-1].hex() != spec.outpoint.txid.value or spec.outpoint.vout >= len(prev.vout)
                or prev.vout[spec.outpoint.vout].nValue != spec.amount.value
                or prev.vout[spec.outpoint.vout].scriptPubKey != spk):
            raise InvalidPsbt(f"input {spec.outpoint}: the funding transaction given does not hold that output")
        psbt.set_utxo(prev, n)
    else:
        if spk.is_p2sh():
            if spec.origin is None:
                raise InvalidPsbt(f"input {spec.outpoint}: a P2SH-P2WPKH input needs its key for the redeem script")
            inp.redeem_script = P2WPKHCoinAddress.from_pubkey(CPubKey(spec.origin.pubkey)).to_scriptPubKey()
        psbt.set_utxo(CTxOut(spec.amount.value, spk), n, force_witness_utxo=True)
    if spec.origin is None:
        return
    if spk.is_witness_v1_taproot():
        internal = spec.origin.pubkey[1:]
        inp.unknown_fields.append(_tap_field(IN_TAP_INTERNAL_KEY, b"", internal))
        inp.unknown_fields.append(_tap_field(IN_TAP_BIP32_DERIVATION, internal, _tap_derivation_value(spec.origin)))
    else:
        inp.derivation_map[CPubKey(spec.origin.pubkey)] = _derivation_info(spec.origin)


def _add_output_fields(psbt: PartiallySignedTransaction, n: int, spec: PsbtOutputSpec) -> None:
    spk = CScript(spec.script_pubkey)
    if spec.witness_script is not None:
        _add_multisig_fields(psbt.outputs[n], spk, spec.witness_script, spec.cosigners, f"output {n}")
        return
    if spec.origin is None:
        return
    if _expected_script(spk, spec.origin.pubkey) != spk:
        raise InvalidPsbt(f"output {n}: its key {spec.origin.pubkey.hex()} does not give its script")
    out = psbt.outputs[n]
    if spk.is_witness_v1_taproot():
        internal = spec.origin.pubkey[1:]
        out.unknown_fields.append(_tap_field(OUT_TAP_INTERNAL_KEY, b"", internal))
        out.unknown_fields.append(_tap_field(OUT_TAP_BIP32_DERIVATION, internal, _tap_derivation_value(spec.origin)))
        return
    if spk.is_p2sh():
        out.redeem_script = P2WPKHCoinAddress.from_pubkey(CPubKey(spec.origin.pubkey)).to_scriptPubKey()
    out.derivation_map[CPubKey(spec.origin.pubkey)] = _derivation_info(spec.origin)


def build_psbt(network: Network, inputs: list[PsbtInputSpec], outputs: list[PsbtOutputSpec],
               locktime: int) -> str:
    """An unsigned PSBT (base64) spending `inputs` to `outputs` in that order."""
    if not inputs or not outputs:
        raise InvalidPsbt("a transaction needs at least one input and one output")
    with ChainParams(network.chain_params):
        tx = CMutableTransaction(
            vin=[CMutableTxIn(COutPoint(lx(i.outpoint.txid.value), i.outpoint.vout), nSequence=RBF_SEQUENCE)
                 for i in inputs],
            vout=[CMutableTxOut(o.amount.value, CScript(o.script_pubkey)) for o in outputs],
            nLockTime=locktime, nVersion=2)
        psbt = PartiallySignedTransaction(unsigned_tx=tx)
        for n, spec in enumerate(inputs):
            _add_input_fields(psbt, n, spec)
        for n, spec in enumerate(outputs):
            _add_output_fields(psbt, n, spec)
        return psbt.to_base64()


def parse_psbt(network: Network, text: str, *, relaxed: bool = False) -> PartiallySignedTransaction:
    """`relaxed`: skip python-bitcointx's sanity checks, which refuse a signature from a key
    outside an input's script (verify_signatures says which and why: bad_signature)."""
    with ChainParams(network.chain_params):
        try:
            return PartiallySignedTransaction.from_base64(text, relaxed_sanity_checks=relaxed)
        except (SerializationError, ValueError, binascii.Error, TypeError, IndexError,
                UnboundLocalError) as exc:   # python-bitcointx: a segwit flag other than 1 in the unsigned tx
            raise InvalidPsbt(f"not a valid base64 PSBT: {exc}") from None


# -- finalizing ---------------------------------------------------------------------------


def clear_signing_fields(inp: PSBT_Input) -> None:
    """What BIP174's finalizer removes once an input is final (BIP371's fields included)."""
    inp.unknown_fields = [f for f in inp.unknown_fields if f.key_type not in IN_TAP_FIELDS]
    inp.partial_sigs, inp.derivation_map = OrderedDict(), OrderedDict()
    inp.redeem_script = inp.witness_script = CScript()
    inp.sighash_type = None


def _finalize_input(psbt: PartiallySignedTransaction, n: int) -> bool:
    """Turn input `n`'s signatures into its final scriptSig/witness (BIP174 finalizer)."""
    inp = psbt.inputs[n]
    if inp.is_final():
        return True
    if input_kind(psbt, n) == P2TR:
        sig = tap_key_sig(inp)
        if sig is None:
            return False
        inp.final_script_witness = CScriptWitness([sig])
        clear_signing_fields(inp)
        return True
    try:
        info = inp.sign(psbt.unsigned_tx, KeyStore(), finalize=True)
    except ValueError as exc:
        raise InvalidPsbt(f"input {n} cannot be finalized: {exc}") from None
    return info is not None and info.is_final


def finalize_input(psbt: PartiallySignedTransaction, n: int) -> bool:
    """Finalize input `n` alone from its signatures (BIP174 finalizer); False when unsigned."""
    return _finalize_input(psbt, n)


def fill_input(psbt: PartiallySignedTransaction, n: int, spec: PsbtInputSpec) -> None:
    """Give input `n` of a PSBT what a signer needs to spend `spec` (its UTXO, key origin, scripts)."""
    _add_input_fields(psbt, n, spec)


def _is_signed(inp: PSBT_Input) -> bool:
    return bool(inp.partial_sigs) or tap_key_sig(inp) is not None


def psbt_status(network: Network, text: str) -> PsbtStatus:
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, text)
        final = sum(1 for inp in psbt.inputs if inp.is_final())
        signed = sum(1 for inp in psbt.inputs if inp.is_final() or _is_signed(inp))
        trial = psbt.clone()
        complete = all([_finalize_input(trial, n) for n in range(len(trial.inputs))])
        try:
            fee = Satoshis(psbt.get_fee())
        except (ValueError, TypeError, AssertionError):
            fee = None
        signatures = sum(len(inp.partial_sigs) + (tap_key_sig(inp) is not None) for inp in psbt.inputs)
        return PsbtStatus(len(psbt.inputs), signed, final, complete, fee, signatures)


def finalize_psbt(network: Network, text: str) -> tuple[str, bytes, Txid]:
    """Finalize every input from its signatures and extract the network transaction."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, text)
        missing = [n for n in range(len(psbt.inputs)) if not _finalize_input(psbt, n)]
        if missing:
            raise InvalidPsbt(f"cannot finalize: {len(missing)} input(s) still need signatures")
        tx = psbt.extract_transaction()
        return psbt.to_base64(), tx.serialize(), Txid(tx.GetTxid()[::-1].hex())


# -- what a PSBT pays, and its txid -------------------------------------------------------


def psbt_txid(network: Network, text: str) -> Txid | None:
    """The transaction's id when signatures cannot change it: every input is segwit (its
    scriptSig is empty, or the push of a known redeem script) or already final."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, text)
        tx = psbt.unsigned_tx.to_mutable()
        for n, inp in enumerate(psbt.inputs):
            if inp.is_final():
                tx.vin[n].scriptSig = CScript(inp.final_script_sig)
                continue
            out = spent_output(psbt, n)
            if out is None:
                return None
            if out.scriptPubKey.is_witness_scriptpubkey():
                tx.vin[n].scriptSig = CScript()
            elif out.scriptPubKey.is_p2sh() and inp.redeem_script.is_witness_scriptpubkey():
                tx.vin[n].scriptSig = CScript([inp.redeem_script])
            else:
                return None
        return Txid(tx.GetTxid()[::-1].hex())


def check_psbt_pays(network: Network, text: str, inputs: Sequence[tuple[OutPoint, Satoshis]],
                    outputs: Sequence[tuple[bytes, Satoshis]], fee: Satoshis) -> None:
    """Raise PsbtMismatch naming the first difference unless the PSBT spends exactly `inputs`
    (in that order, with those amounts in its UTXO fields), pays exactly `outputs` (scripts
    and amounts, in that order) and that `fee`, and asks only for SIGHASH_ALL/DEFAULT."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, text)
        vin = psbt.unsigned_tx.vin
        actual = [OutPoint(Txid(i.prevout.hash[::-1].hex()), i.prevout.n) for i in vin]
        expected = [o for o, _ in inputs]
        for outpoint in expected:
            if outpoint not in actual:
                raise PsbtMismatch(f"the PSBT does not spend input {outpoint}")
        for outpoint in actual:
            if outpoint not in expected:
                raise PsbtMismatch(f"the PSBT spends an extra input {outpoint}")
        if len(actual) != len(expected):
            raise PsbtMismatch(f"the PSBT has {len(actual)} inputs, the withdrawal {len(expected)}")
        for n, (outpoint, amount) in enumerate(inputs):
            if actual[n] != outpoint:
                raise PsbtMismatch(f"input {n} spends {actual[n]}, the withdrawal {outpoint} (inputs reordered)")
            out = spent_output(psbt, n)
            if out is None:
                raise PsbtMismatch(f"input {n} ({outpoint}) carries no UTXO: its amount cannot be checked")
            if out.nValue != amount.value:
                raise PsbtMismatch(f"input {n} ({outpoint}) is worth {out.nValue} sat in the PSBT, "
                                   f"the withdrawal says {amount.value} sat")
            if psbt.inputs[n].sighash_type not in (None, SIGHASH_ALL, SIGHASH_DEFAULT):
                raise PsbtMismatch(f"input {n} asks for sighash type {psbt.inputs[n].sighash_type}: "
                                   "only ALL (or taproot's DEFAULT) is signed")
        vout = psbt.unsigned_tx.vout
        for n, (script, amount) in enumerate(outputs):
            if n >= len(vout):
                raise PsbtMismatch(f"the PSBT is missing output {n} ({amount.value} sat to script {script.hex()})")
            if bytes(vout[n].scriptPubKey) != script:
                raise PsbtMismatch(f"output {n} pays script {bytes(vout[n].scriptPubKey).hex()}, "
                                   f"the withdrawal {script.hex()}")
            if vout[n].nValue != amount.value:
                raise PsbtMismatch(f"output {n} pays {vout[n].nValue} sat, the withdrawal {amount.value} sat")
        if len(vout) > len(outputs):
            extra = vout[len(outputs)]
            raise PsbtMismatch(f"the PSBT has an extra output {len(outputs)} paying {extra.nValue} sat "
                               f"to script {bytes(extra.scriptPubKey).hex()}")
        paid = sum(psbt.get_input_amounts()) - sum(o.nValue for o in vout)
        if paid != fee.value:
            raise PsbtMismatch(f"the PSBT pays a fee of {paid} sat, the withdrawal {fee.value} sat")


def multisig_fingerprints(network: Network, text: str) -> list[str]:
    """The master fingerprints of the cosigners of the PSBT's multisig (P2WSH) inputs, in the
    order first met."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, text)
        found: dict[str, None] = {}
        for n, inp in enumerate(psbt.inputs):
            if not inp.is_final() and input_kind(psbt, n) == P2WSH:
                found.update((bytes(info.master_fp).hex(), None) for info in inp.derivation_map.values())
        return list(found)


def same_unsigned_tx(network: Network, a: str, b: str) -> bool:
    """Whether two PSBTs are for the same unsigned transaction (signatures aside)."""
    with ChainParams(network.chain_params):
        return (parse_psbt(network, a).unsigned_tx.serialize(include_witness=False)
                == parse_psbt(network, b).unsigned_tx.serialize(include_witness=False))


# -- size -------------------------------------------------------------------------------------


def _signature_for(inp: PSBT_Input) -> tuple[bytes, bytes]:
    """The input's own partial signature and key when it has one, else Core's dummies."""
    if inp.partial_sigs:
        pub, sig = next(iter(inp.partial_sigs.items()))
        return sig, bytes(pub)
    pub = next(iter(inp.derivation_map), None)
    return DUMMY_ECDSA_SIGNATURE, bytes(pub) if pub is not None else _DUMMY_PUBKEY


def _multisig_witness(inp: PSBT_Input) -> list[bytes]:
    """The witness a finalized multisig input will have: the empty item, `required` signatures
    (its own where it has them, Core's dummies for the rest) and the witness script."""
    info = parse_standard_multisig_redeem_script(inp.witness_script)
    sigs = [inp.partial_sigs[k] for k in info.pubkeys if k in inp.partial_sigs][:info.required]
    sigs += [DUMMY_ECDSA_SIGNATURE] * (info.required - len(sigs))
    return [b"", *sigs, bytes(inp.witness_script)]


def estimated_vsize(network: Network, text: str) -> int:
    """The virtual size of the signed transaction, as `analyzepsbt` estimates it. Core's
    sigop-weighted size is not counted: it only exceeds the plain size for non-standard
    scripts."""
    return -(-estimated_weight(network, text) // 4)


def estimated_weight(network: Network, text: str) -> int:
    """The weight of the signed transaction: final inputs as they are, signed ones with their
    signatures, the rest with Core's dummy signatures (see DUMMY_ECDSA_SIGNATURE)."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, text)
        tx = psbt.unsigned_tx.to_mutable()
        witnesses = []
        for n, inp in enumerate(psbt.inputs):
            witness: list[bytes] = []
            if inp.is_final():
                tx.vin[n].scriptSig = CScript(inp.final_script_sig)
                witness = list(inp.final_script_witness.stack)
            else:
                kind = input_kind(psbt, n)
                if kind == P2TR:
                    witness = [tap_key_sig(inp) or DUMMY_SCHNORR_SIGNATURE]
                elif kind in (P2WPKH, P2SH_P2WPKH):
                    witness = list(_signature_for(inp))
                    if kind == P2SH_P2WPKH:
                        tx.vin[n].scriptSig = CScript([inp.redeem_script])
                elif kind == P2PKH:
                    tx.vin[n].scriptSig = CScript(list(_signature_for(inp)))
                elif kind == P2WSH:
                    witness = _multisig_witness(inp)
                else:
                    raise InvalidPsbt(f"input {n}: cannot estimate the size of spending its script")
            witnesses.append(CTxInWitness(CScriptWitness(witness)))
        tx.wit = CTxWitness(witnesses)
        return len(tx.serialize(include_witness=False)) * 3 + len(tx.serialize())
