"""Every signature `combine` accepts verifies (ECDSA for segwit v0 and legacy P2PKH, BIP340 for
a taproot key path, with its sighash type), and combining never writes a key twice."""
from __future__ import annotations

import pytest
from bip_utils import Bip39SeedGenerator, Bip44Changes, Bip86, Bip86Coins
from bitcointx import ChainParams
from bitcointx.core.psbt import PSBT_UnknownTypeData
from bitcointx.core.script import SIGHASH_ALL, SIGHASH_NONE, CScript, CScriptWitness
from bitcointx.wallet import CCoinKey
from hypothesis import given, settings
from hypothesis import strategies as st

from kaccy_bitcoin.domain.bitcoin import AddressType
from kaccy_bitcoin.domain.psbt import (
    IN_TAP_BIP32_DERIVATION,
    IN_TAP_INTERNAL_KEY,
    BadSignature,
    finalize_psbt,
    parse_psbt,
    psbt_status,
    set_tap_key_sig,
    tap_key_sig,
    taproot_key_path_sighash,
)
from kaccy_bitcoin.domain.psbt_signatures import combine_psbts, verify_signatures
from tests.test_psbt import KINDS, NET, WORDS, unsigned, wallet


def _flip(sig: bytes, at: int) -> bytes:
    return sig[:at] + bytes([sig[at] ^ 1]) + sig[at + 1:]


def _edit(psbt: str, change) -> str:  # noqa: ANN001
    with ChainParams(NET.chain_params):
        parsed = parse_psbt(NET, psbt, relaxed=True)
        change(parsed)
        return parsed.to_base64()


def _tamper_first_signature(kind: AddressType, psbt: str) -> str:
    """The first input's signature with one bit of its S value changed (still well formed)."""
    def change(parsed) -> None:  # noqa: ANN001
        inp = parsed.inputs[0]
        if kind is AddressType.P2TR:
            set_tap_key_sig(inp, _flip(tap_key_sig(inp), 40))
        else:
            pub, sig = next(iter(inp.partial_sigs.items()))
            inp.partial_sigs[pub] = _flip(sig, len(sig) - 3)     # inside S, before the sighash byte
    return _edit(psbt, change)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_a_valid_signature_combines_and_a_tampered_one_is_refused(kind: AddressType) -> None:
    psbt = unsigned(kind)[0]
    signed = (await wallet(kind)[1].sign(psbt)).psbt
    merged = combine_psbts(NET, psbt, signed)
    assert psbt_status(NET, merged).complete
    verify_signatures(NET, merged)
    tampered = _tamper_first_signature(kind, signed)
    with pytest.raises(BadSignature, match="input 0: .*does not verify"):
        combine_psbts(NET, psbt, tampered)
    with pytest.raises(BadSignature):
        verify_signatures(NET, tampered)


def _tamper_final(psbt: str) -> str:
    """The first input's final signature (first witness item, else first scriptSig push) with
    one bit changed inside it."""
    def change(parsed) -> None:  # noqa: ANN001
        inp = parsed.inputs[0]
        stack = list(inp.final_script_witness.stack)
        if stack:
            stack[0] = _flip(stack[0], 20)
            inp.final_script_witness = CScriptWitness(stack)
        else:
            pushes = list(CScript(inp.final_script_sig))
            inp.final_script_sig = CScript([_flip(pushes[0], len(pushes[0]) - 3), *pushes[1:]])
    return _edit(psbt, change)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_a_finalized_psbt_is_checked_too(kind: AddressType) -> None:
    """A signer may send its inputs back finalized (`walletprocesspsbt` does by default)."""
    psbt = unsigned(kind)[0]
    final = finalize_psbt(NET, (await wallet(kind)[1].sign(psbt)).psbt)[0]
    assert psbt_status(NET, combine_psbts(NET, psbt, final)).complete
    with pytest.raises(BadSignature, match="input 0"):
        combine_psbts(NET, psbt, _tamper_final(final))


def test_junk_signatures_are_refused() -> None:
    taproot = unsigned(AddressType.P2TR)[0]
    for junk in (bytes(64), b"\x5a" * 64, b"\x5a" * 64 + b"\x01", b"\x5a" * 63, b"\x5a" * 66):
        with pytest.raises(BadSignature, match="input 1"):
            combine_psbts(NET, taproot, _edit(taproot, lambda p, j=junk: set_tap_key_sig(p.inputs[1], j)))
    legacy = unsigned(AddressType.P2PKH)[0]
    with ChainParams(NET.chain_params):
        pub = next(iter(parse_psbt(NET, legacy).inputs[0].derivation_map))
    for junk in (b"\x30" + bytes(69) + b"\x01", bytes(71)):
        with pytest.raises(BadSignature, match="input 0"):
            combine_psbts(NET, legacy, _edit(legacy, lambda p, j=junk: p.inputs[0].partial_sigs.__setitem__(pub, j)))


def _taproot_secret(index: int) -> bytes:
    account = Bip86.FromSeed(Bip39SeedGenerator(WORDS).Generate(), Bip86Coins.BITCOIN_TESTNET).Purpose().Coin()
    key = account.Account(0).Change(Bip44Changes.CHAIN_EXT).AddressIndex(index)
    return key.PrivateKey().Raw().ToBytes()


def _sign_taproot(psbt: str, hashtype, suffix: bytes) -> str:  # noqa: ANN001
    def change(parsed) -> None:  # noqa: ANN001
        for n in range(len(parsed.inputs)):
            sighash = taproot_key_path_sighash(parsed, n, hashtype)
            sig = CCoinKey.from_secret_bytes(_taproot_secret(n)).sign_schnorr_tweaked(sighash)
            set_tap_key_sig(parsed.inputs[n], sig + suffix)
    return _edit(psbt, change)


def test_taproot_sighash_types() -> None:
    psbt = unsigned(AddressType.P2TR)[0]
    assert psbt_status(NET, combine_psbts(NET, psbt, _sign_taproot(psbt, None, b""))).complete   # DEFAULT, 64 bytes
    assert psbt_status(NET, combine_psbts(NET, psbt, _sign_taproot(psbt, SIGHASH_ALL, b"\x01"))).complete
    refused = {"a DEFAULT signature declared ALL": _sign_taproot(psbt, None, b"\x01"),
               "an ALL signature sent as DEFAULT": _sign_taproot(psbt, SIGHASH_ALL, b""),
               "an explicit 0": _sign_taproot(psbt, None, b"\x00"),
               "NONE (lets anyone redirect the outputs)": _sign_taproot(psbt, SIGHASH_NONE, b"\x02")}
    for what, theirs in refused.items():
        with pytest.raises(BadSignature, match="input 0"):
            combine_psbts(NET, psbt, theirs)
            pytest.fail(what)


# -- the merge: one value per key --------------------------------------------------------------
_KEY_TYPES = st.sampled_from([IN_TAP_BIP32_DERIVATION, IN_TAP_INTERNAL_KEY, 0x19, 0x1a, 0xf0])
_FIELDS = st.lists(st.tuples(_KEY_TYPES, st.binary(max_size=3), st.binary(max_size=8)), max_size=6)


def _fields(psbt: str) -> list[list[tuple[int, bytes, bytes]]]:
    with ChainParams(NET.chain_params):
        parsed = parse_psbt(NET, psbt)
        return [[tuple(f) for f in e.unknown_fields] for e in (*parsed.inputs, *parsed.outputs)]


def _add(psbt: str, extra: list[list[tuple[int, bytes, bytes]]]) -> str:
    """`psbt` with unknown fields added to its inputs and outputs (each key once per entry)."""
    def change(parsed) -> None:  # noqa: ANN001
        for entry, fields in zip((*parsed.inputs, *parsed.outputs), extra):
            keys = {(f.key_type, f.key_data) for f in entry.unknown_fields}
            for key_type, key, value in fields:
                if (key_type, key) not in keys:
                    keys.add((key_type, key))
                    entry.unknown_fields.append(PSBT_UnknownTypeData(key_type, key, value))
    return _edit(psbt, change)


@settings(max_examples=60, deadline=None)
@given(ours=st.lists(_FIELDS, min_size=4, max_size=4), theirs=st.lists(_FIELDS, min_size=4, max_size=4),
       repeat=st.booleans())
def test_combining_keeps_one_value_per_key_ours_first(ours, theirs, repeat) -> None:  # noqa: ANN001
    base = unsigned(AddressType.P2TR)[0]
    a = _add(base, ours)
    # `theirs` holds every field of ours (what a signer such as walletprocesspsbt sends back)
    # or only the base PSBT's, plus its own fields, some under keys of ours with other values.
    b = _add(a if repeat else base, theirs)
    merged = combine_psbts(NET, a, b)          # parses again: no key twice
    for mine, other, got in zip(_fields(a), _fields(b), _fields(merged)):
        keys = [(t, k) for t, k, _ in got]
        assert len(keys) == len(set(keys))
        assert got[:len(mine)] == mine        # ours, in order, with our values
        mine_keys = {(t, k) for t, k, _ in mine}
        assert got[len(mine):] == [f for f in other if (f[0], f[1]) not in mine_keys]
    assert combine_psbts(NET, a, a) == a
    assert combine_psbts(NET, merged, b) == merged
