"""Verifying the signatures of a PSBT and combining PSBTs (BIP174's combiner), with
python-bitcointx's sighashes and script interpreter and libsecp256k1 through coincurve.

Nothing in a PSBT that came from elsewhere decides what a signature commits to: it is checked
against our own UTXOs. ECDSA (P2PKH, P2SH-P2WPKH, P2WPKH, P2WSH multisig): strict DER, low S,
SIGHASH_ALL, a key the coin's script names. BIP340 key path (P2TR): the BIP341 sighash,
SIGHASH_DEFAULT (64 bytes) or ALL (65), against the key the output pays to. A finalized input
(Core's walletprocesspsbt finalizes by default) is run through the script interpreter.
"""
from __future__ import annotations

from bitcointx import ChainParams
from bitcointx.core import Hash160
from bitcointx.core.psbt import PartiallySignedTransaction, PSBT_UnknownTypeData
from bitcointx.core.script import SIGHASH_ALL, SIGVERSION_BASE, SIGVERSION_WITNESS_V0, CScript
from bitcointx.core.scripteval import VerifyScript, VerifyScriptError
from bitcointx.wallet import P2PKHCoinAddress
from coincurve import PublicKey, PublicKeyXOnly

from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.psbt import (
    P2PKH,
    P2SH_P2WPKH,
    P2TR,
    P2WPKH,
    P2WSH,
    BadSignature,
    InvalidPsbt,
    PsbtMismatch,
    clear_signing_fields,
    input_kind,
    multisig_keys,
    parse_psbt,
    spent_output,
    tap_key_sig,
    taproot_key_path_sighash,
)


def _ecdsa_scope(psbt: PartiallySignedTransaction, n: int) -> tuple[CScript, int, list[bytes]]:
    """What input `n`'s ECDSA signatures commit to and who may make them: the script code
    (BIP143 for segwit v0, the scriptPubKey for legacy P2PKH), its signature version and the
    keys its script names."""
    inp = psbt.inputs[n]
    kind = input_kind(psbt, n)
    if kind == P2WSH:
        script = CScript(inp.witness_script)
        if script.to_p2wsh_scriptPubKey() != spent_output(psbt, n).scriptPubKey:
            raise BadSignature(f"input {n}: its witness script is not the one the coin commits to")
        return script, SIGVERSION_WITNESS_V0, multisig_keys(script, f"input {n}")
    if kind in (P2WPKH, P2SH_P2WPKH):
        program = spent_output(psbt, n).scriptPubKey if kind == P2WPKH else inp.redeem_script
        keyhash = program.witness_program()
        code = P2PKHCoinAddress.from_bytes(keyhash).to_scriptPubKey()
        return code, SIGVERSION_WITNESS_V0, [bytes(k) for k in inp.partial_sigs if k.key_id == keyhash]
    if kind == P2PKH:
        code = spent_output(psbt, n).scriptPubKey
        keyhash = bytes(code)[3:23]
        return code, SIGVERSION_BASE, [bytes(k) for k in inp.partial_sigs if Hash160(bytes(k)) == keyhash]
    raise BadSignature(f"input {n}: holds ECDSA signatures, but its coin is not one they can spend "
                       f"({'a taproot output' if kind == P2TR else 'unknown or of another type'})")


def _ecdsa_valid(pub: bytes, der: bytes, sighash: bytes) -> bool:
    """libsecp256k1 (coincurve): strict DER, low S, as Bitcoin Core's standardness asks."""
    try:
        return PublicKey(pub).verify(der, sighash, hasher=None)
    except (ValueError, TypeError):
        return False


def _verify_ecdsa(psbt: PartiallySignedTransaction, n: int) -> None:
    inp = psbt.inputs[n]
    code, sigversion, keys = _ecdsa_scope(psbt, n)
    amount = spent_output(psbt, n).nValue
    for pub, sig in inp.partial_sigs.items():
        if bytes(pub) not in keys:
            raise BadSignature(f"input {n}: a signature from key {bytes(pub).hex()}, which is not one of "
                               "the keys this coin can be spent with")
        if not sig or sig[-1] != SIGHASH_ALL:
            raise BadSignature(f"input {n}: the signature of key {bytes(pub).hex()} is not SIGHASH_ALL")
        sighash = code.sighash(psbt.unsigned_tx, n, SIGHASH_ALL, amount=amount, sigversion=sigversion)
        if not _ecdsa_valid(bytes(pub), bytes(sig[:-1]), sighash):
            raise BadSignature(f"input {n}: the signature of key {bytes(pub).hex()} does not verify")


def _verify_taproot_key_path(psbt: PartiallySignedTransaction, n: int, sig: bytes) -> None:
    """BIP340 over the BIP341 sighash, by the output key the coin pays to (the internal key
    tweaked: whoever signs, that is the key the network checks). 64 bytes: SIGHASH_DEFAULT;
    65: the last byte names the type, and only ALL is signed here (an explicit 0 is invalid)."""
    if len(sig) == 64:
        hashtype = None
    elif len(sig) == 65 and sig[64] == SIGHASH_ALL:
        hashtype = SIGHASH_ALL
    else:
        raise BadSignature(f"input {n}: a taproot signature of {len(sig)} bytes"
                           f"{f' with sighash type {sig[64]}' if len(sig) == 65 else ''}: only 64 bytes "
                           "(SIGHASH_DEFAULT) or 65 ending in 1 (SIGHASH_ALL) are signed")
    output_key = spent_output(psbt, n).scriptPubKey.witness_program()
    sighash = taproot_key_path_sighash(psbt, n, hashtype)
    try:
        valid = PublicKeyXOnly(output_key).verify(sig[:64], sighash)
    except ValueError:
        valid = False
    if not valid:
        raise BadSignature(f"input {n}: the taproot key-path signature does not verify against the output "
                           f"key {output_key.hex()}")


def verify_signatures(network: Network, text: str) -> None:
    """Raise BadSignature unless every signature the PSBT holds verifies: each partial ECDSA
    signature (segwit v0, legacy P2PKH) is made by a key the input's script names, as
    SIGHASH_ALL over the transaction; each taproot key-path signature is a valid BIP340
    signature by the output key, SIGHASH_DEFAULT or ALL; each finalized input's script or
    key-path signature verifies."""
    with ChainParams(network.chain_params):
        _verify(parse_psbt(network, text, relaxed=True))


def _verify_final(psbt: PartiallySignedTransaction, n: int) -> None:
    """A finalized input (a signer may finalize, as `walletprocesspsbt` does by default): a
    taproot one must be a key-path spend whose signature verifies as above; any other runs
    through python-bitcointx's script interpreter with the standard flags (strict DER, low S)."""
    inp, out = psbt.inputs[n], spent_output(psbt, n)
    if out is None:
        raise BadSignature(f"input {n}: final, but carries no UTXO to check its signatures against")
    if out.scriptPubKey.is_witness_v1_taproot():
        stack = list(inp.final_script_witness.stack)
        if len(stack) != 1 or inp.final_script_sig:
            raise BadSignature(f"input {n}: a final taproot input must be a key-path spend (one signature)")
        _verify_taproot_key_path(psbt, n, bytes(stack[0]))
        return
    try:
        VerifyScript(CScript(inp.final_script_sig), out.scriptPubKey, psbt.unsigned_tx, n,
                     amount=out.nValue, witness=inp.final_script_witness)
    except (VerifyScriptError, ValueError, TypeError) as exc:
        raise BadSignature(f"input {n}: its final script does not verify ({exc})") from None


def _verify(psbt: PartiallySignedTransaction) -> None:
    for n, inp in enumerate(psbt.inputs):
        if inp.is_final():
            _verify_final(psbt, n)
            continue
        if inp.partial_sigs:
            _verify_ecdsa(psbt, n)
        sig = tap_key_sig(inp)
        if sig is not None:
            if input_kind(psbt, n) != P2TR:
                raise BadSignature(f"input {n}: holds a taproot signature, but its coin is not a taproot output")
            _verify_taproot_key_path(psbt, n, sig)


def _without_repeated_keys(fields: list[PSBT_UnknownTypeData]) -> list[PSBT_UnknownTypeData]:
    """One entry per key (type and key data), the first met: BIP174's combiner keeps one value
    per key (and may pick any when two PSBTs disagree); ours come first, so ours win."""
    seen: set[tuple[int, bytes]] = set()
    kept = []
    for field in fields:
        if (field.key_type, field.key_data) not in seen:
            seen.add((field.key_type, field.key_data))
            kept.append(field)
    return kept


def merge_psbts(a: PartiallySignedTransaction, b: PartiallySignedTransaction) -> PartiallySignedTransaction:
    """BIP174 combiner: `a` with every field of `b` it lacks. python-bitcointx merges the
    fields it knows by key, but appends the ones it does not (BIP371's taproot fields among
    them), so a field both PSBTs hold, such as the taproot derivation a signer sends back,
    would be written twice: a PSBT no parser accepts (Duplicate key). One value per key."""
    try:
        merged = a.combine(b)
    except ValueError as exc:
        raise InvalidPsbt(f"the PSBTs cannot be combined: {exc}") from None
    for inp in merged.inputs:
        if inp.final_script_sig or inp.final_script_witness:
            clear_signing_fields(inp)      # finalized on one side: as the finalizer leaves it
    for entry in (*merged.inputs, *merged.outputs, merged):
        entry.unknown_fields = _without_repeated_keys(entry.unknown_fields)
        for prefix, fields in entry.proprietary_fields.items():
            seen: set[tuple[int, bytes]] = set()
            entry.proprietary_fields[prefix] = [f for f in fields if (f.subtype, f.key_data) not in seen
                                                and not seen.add((f.subtype, f.key_data))]
    return merged


def combine_psbts(network: Network, ours: str, theirs: str) -> str:
    """BIP174 combiner: `ours` with the signatures (and other fields) of `theirs`; PsbtMismatch
    when `theirs` is for another transaction, BadSignature when a signature in it does not
    verify (checked against our own UTXOs: nothing of `theirs` decides what a signature commits to)."""
    with ChainParams(network.chain_params):
        a, b = parse_psbt(network, ours), parse_psbt(network, theirs, relaxed=True)
        if a.unsigned_tx.serialize(include_witness=False) != b.unsigned_tx.serialize(include_witness=False):
            raise PsbtMismatch("the PSBT given is for another transaction than this withdrawal's")
        merged = merge_psbts(a, b)
        _verify(merged)   # before serializing: python-bitcointx refuses a foreign key with a less clear error
        return merged.to_base64()
