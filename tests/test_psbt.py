"""PSBTs without a node: each input type built, signed, sized, finalized and verified;
what a PSBT pays checked against a withdrawal; its txid when signatures cannot change it."""
from __future__ import annotations

import functools

import pytest
from bip_utils import (
    Bip32Secp256k1,
    Bip39SeedGenerator,
    Bip44,
    Bip44Coins,
    Bip49,
    Bip49Coins,
    Bip84,
    Bip84Coins,
    Bip86,
    Bip86Coins,
)
from bitcointx import ChainParams
from bitcointx.core import CMutableTransaction, CMutableTxIn, CMutableTxOut, COutPoint, CTransaction
from bitcointx.core.key import XOnlyPubKey
from bitcointx.core.script import SIGHASH_NONE, CScript, CScriptWitness, SignatureHashSchnorr
from bitcointx.core.scripteval import SCRIPT_VERIFY_P2SH, SCRIPT_VERIFY_WITNESS, VerifyScript

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.keys.software_signer import SoftwareSigner
from kaccy_bitcoin.domain.bitcoin import Address, AddressType, Network, OutPoint, Txid
from kaccy_bitcoin.domain.coin_selection import INPUT_WEIGHT, OUTPUT_TYPE_WEIGHT, overhead_weight
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.psbt import (
    IN_TAP_FIELDS,
    InvalidPsbt,
    KeyOrigin,
    PsbtInputSpec,
    PsbtMismatch,
    PsbtOutputSpec,
    build_psbt,
    check_psbt_pays,
    estimated_weight,
    finalize_psbt,
    parse_psbt,
    psbt_status,
    psbt_txid,
    same_unsigned_tx,
    tap_key_derivations,
)
from kaccy_bitcoin.ports.signer import SignerError

NET = Network.REGTEST
WORDS = "abandon " * 11 + "about"      # the BIP39 test vector: deterministic keys
ACCOUNTS = {AddressType.P2WPKH: (Bip84, Bip84Coins.BITCOIN_TESTNET),
            AddressType.P2SH: (Bip49, Bip49Coins.BITCOIN_TESTNET),
            AddressType.P2PKH: (Bip44, Bip44Coins.BITCOIN_TESTNET),
            AddressType.P2TR: (Bip86, Bip86Coins.BITCOIN_TESTNET)}
KINDS = list(ACCOUNTS)
FINGERPRINT = Bip32Secp256k1.FromSeed(Bip39SeedGenerator(WORDS).Generate()).FingerPrint().ToBytes().hex()
# Coin selection prices an ECDSA input with a 72-byte signature (the worst case); the estimate,
# like Core's analyzepsbt, with a 71-byte one: one scriptSig byte (4 weight units) for P2PKH,
# one witness byte (1 weight unit) for segwit v0; Schnorr signatures are always 64 bytes.
SIGNATURE_SLACK = {AddressType.P2PKH: 4, AddressType.P2SH: 1, AddressType.P2WPKH: 1, AddressType.P2TR: 0}


@functools.cache
def wallet(kind: AddressType) -> tuple[Bip32AddressDeriver, SoftwareSigner]:
    bip, coin = ACCOUNTS[kind]
    account = bip.FromSeed(Bip39SeedGenerator(WORDS).Generate(), coin).Purpose().Coin().Account(0)
    deriver = Bip32AddressDeriver(account.PublicKey().ToExtended(), NET, kind, FINGERPRINT)
    return deriver, SoftwareSigner(WORDS, "", deriver)


def origin(deriver: Bip32AddressDeriver, chain: int, index: int) -> KeyOrigin:
    return KeyOrigin(FINGERPRINT, deriver.path(chain, index), deriver.public_key(chain, index))


def script(deriver: Bip32AddressDeriver, chain: int, index: int) -> bytes:
    return Address(deriver.address(chain, index), NET).script_pubkey()


def funding(deriver: Bip32AddressDeriver, amounts: list[int]) -> bytes:
    """A transaction paying `amounts` to receive addresses 0, 1, ... of the wallet."""
    with ChainParams(NET.chain_params):
        tx = CMutableTransaction([CMutableTxIn(COutPoint(b"\x01" * 32, 0))],
                                 [CMutableTxOut(a, CScript(script(deriver, 0, i))) for i, a in enumerate(amounts)])
        return tx.serialize()


PAYOUT = Address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", NET)


def unsigned(kind: AddressType, amounts: tuple[int, ...] = (50_000, 70_000), locktime: int = 0
             ) -> tuple[str, list[tuple[OutPoint, Satoshis]], list[tuple[bytes, Satoshis]], Satoshis]:
    """A PSBT spending one coin per amount to a payout and change of the same type."""
    deriver, _ = wallet(kind)
    raw = funding(deriver, list(amounts))
    txid = Txid(CTransaction.deserialize(raw).GetTxid()[::-1].hex())
    inputs = [(OutPoint(txid, i), Satoshis(a)) for i, a in enumerate(amounts)]
    outputs = [(PAYOUT.script_pubkey(), Satoshis(30_000)),
               (script(deriver, 1, 0), Satoshis(sum(amounts) - 30_000 - 1_000))]
    psbt = build_psbt(NET, [PsbtInputSpec(o, a, script(deriver, 0, o.vout), origin(deriver, 0, o.vout), raw)
                            for o, a in inputs],
                      [PsbtOutputSpec(*outputs[0]), PsbtOutputSpec(*outputs[1], origin(deriver, 1, 0))], locktime)
    return psbt, inputs, outputs, Satoshis(1_000)


def verify(raw: bytes, psbt: str) -> None:
    """Every input of the extracted transaction passes python-bitcointx's script checks (ECDSA)
    or verifies as a BIP341 key-path signature for the output key it spends (Schnorr)."""
    with ChainParams(NET.chain_params):
        tx = CTransaction.deserialize(raw)
        parsed = parse_psbt(NET, psbt)
        spent = [parsed.inputs[n].witness_utxo or parsed.inputs[n].utxo.vout[tx.vin[n].prevout.n]
                 for n in range(len(tx.vin))]
        for n, out in enumerate(spent):
            witness = tx.wit.vtxinwit[n].scriptWitness if tx.wit.vtxinwit else CScriptWitness()
            if out.scriptPubKey.is_witness_v1_taproot():
                (sig,) = witness.stack
                assert len(sig) == 64
                assert XOnlyPubKey(out.scriptPubKey[2:]).verify_schnorr(SignatureHashSchnorr(tx, n, spent), sig)
            else:
                VerifyScript(tx.vin[n].scriptSig, out.scriptPubKey, tx, n, {SCRIPT_VERIFY_P2SH, SCRIPT_VERIFY_WITNESS},
                             amount=out.nValue, witness=witness)


def weight(raw: bytes) -> int:
    with ChainParams(NET.chain_params):
        tx = CTransaction.deserialize(raw)
        return len(tx.serialize(include_witness=False)) * 3 + len(tx.serialize())


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_each_type_is_signed_finalized_and_verifies(kind: AddressType) -> None:
    psbt, _, _, fee = unsigned(kind)
    status = psbt_status(NET, psbt)
    assert (status.inputs, status.inputs_signed, status.complete, status.fee) == (2, 0, False, fee)
    with pytest.raises(InvalidPsbt, match="2 input"):
        finalize_psbt(NET, psbt)
    signed = await wallet(kind)[1].sign(psbt)
    assert signed.complete and signed.signed_inputs == 2
    status = psbt_status(NET, signed.psbt)
    assert (status.inputs_signed, status.inputs_final, status.complete) == (2, 0, True)
    final, raw, txid = finalize_psbt(NET, signed.psbt)
    verify(raw, final)
    # The finalizer leaves no signing data behind (BIP371 fields included), only UTXOs and finals.
    for inp in parse_psbt(NET, final).inputs:
        assert inp.is_final() and not inp.derivation_map and not inp.partial_sigs
        assert not [f for f in inp.unknown_fields if f.key_type in IN_TAP_FIELDS]
    # Sizes: with its signatures the estimate is exact; unsigned, it is at most the slack above.
    assert estimated_weight(NET, signed.psbt) == estimated_weight(NET, final) == weight(raw)
    assert 0 <= estimated_weight(NET, psbt) - weight(raw) <= 2 * SIGNATURE_SLACK[kind]
    # The txid is known before signing exactly when every input is segwit.
    if kind is AddressType.P2PKH:
        assert psbt_txid(NET, psbt) is None and psbt_txid(NET, signed.psbt) is None
    else:
        assert psbt_txid(NET, psbt) == psbt_txid(NET, signed.psbt) == txid
    assert psbt_txid(NET, final) == txid


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize("count", [1, 3])
def test_input_weights_are_what_coin_selection_prices(kind: AddressType, count: int) -> None:
    psbt = unsigned(kind, tuple(40_000 + n for n in range(count)))[0]
    expected = (overhead_weight(kind) + count * (INPUT_WEIGHT[kind] - SIGNATURE_SLACK[kind])
                + OUTPUT_TYPE_WEIGHT[AddressType.P2WPKH] + OUTPUT_TYPE_WEIGHT[kind])
    assert estimated_weight(NET, psbt) == expected


def test_taproot_fields_carry_the_bip86_origin() -> None:
    psbt = unsigned(AddressType.P2TR)[0]
    deriver = wallet(AddressType.P2TR)[0]
    for n, inp in enumerate(parse_psbt(NET, psbt).inputs):
        ((xonly, info),) = tap_key_derivations(inp)
        assert xonly == deriver.public_key(0, n)[1:] and info.master_fp.hex() == FINGERPRINT
        assert list(info.path) == list(deriver.path(0, n).indexes)


def test_check_psbt_pays_accepts_exactly_what_was_recorded() -> None:
    psbt, inputs, outputs, fee = unsigned(AddressType.P2WPKH)
    check_psbt_pays(NET, psbt, inputs, outputs, fee)


def _with(items: list, n: int, item: object) -> list:
    return [item if i == n else x for i, x in enumerate(items)]


DIFFERENCES = {
    "missing input": (lambda i, o, f: (i + [(OutPoint(Txid("ab" * 32), 0), Satoshis(1))], o, f),
                      "does not spend input ab"),
    "extra input": (lambda i, o, f: (i[:1], o, f), "spends an extra input"),
    "reordered inputs": (lambda i, o, f: (i[::-1], o, f), "inputs reordered"),
    "input amount": (lambda i, o, f: (_with(i, 1, (i[1][0], Satoshis(70_001))), o, f),
                     "is worth 70000 sat in the PSBT, the withdrawal says 70001"),
    "output script": (lambda i, o, f: (i, _with(o, 0, (b"\x00\x14" + bytes(20), o[0][1])), f), "output 0 pays script"),
    "output amount": (lambda i, o, f: (i, _with(o, 1, (o[1][0], Satoshis(1))), f), "output 1 pays 89000 sat"),
    "missing output": (lambda i, o, f: (i, o + [(o[0][0], Satoshis(5))], f), "missing output 2"),
    "extra output": (lambda i, o, f: (i, o[:1], f), "extra output 1 paying 89000 sat"),
    "fee": (lambda i, o, f: (i, o, Satoshis(999)), "fee of 1000 sat, the withdrawal 999"),
}


@pytest.mark.parametrize("difference", list(DIFFERENCES))
def test_check_psbt_pays_names_each_difference(difference: str) -> None:
    psbt, inputs, outputs, fee = unsigned(AddressType.P2WPKH)
    change, message = DIFFERENCES[difference]
    with pytest.raises(PsbtMismatch, match=message):
        check_psbt_pays(NET, psbt, *change(inputs, outputs, fee))


async def test_a_psbt_asking_for_another_sighash_is_neither_accepted_nor_signed() -> None:
    psbt, inputs, outputs, fee = unsigned(AddressType.P2SH)
    with ChainParams(NET.chain_params):
        parsed = parse_psbt(NET, psbt)
        parsed.inputs[1].sighash_type = SIGHASH_NONE     # would let anyone redirect the outputs
        tampered = parsed.to_base64()
    with pytest.raises(PsbtMismatch, match="input 1 asks for sighash type"):
        check_psbt_pays(NET, tampered, inputs, outputs, fee)
    with pytest.raises(SignerError, match="input 1 asks for sighash type"):
        await wallet(AddressType.P2SH)[1].sign(tampered)


def test_an_input_without_its_utxo_cannot_be_checked() -> None:
    psbt, inputs, outputs, fee = unsigned(AddressType.P2TR)
    with ChainParams(NET.chain_params):
        parsed = parse_psbt(NET, psbt)
        parsed.inputs[0].set_utxo(None, parsed.unsigned_tx)
        stripped = parsed.to_base64()
    with pytest.raises(PsbtMismatch, match="input 0 .* carries no UTXO"):
        check_psbt_pays(NET, stripped, inputs, outputs, fee)


async def test_same_unsigned_tx_ignores_signatures_only() -> None:
    psbt = unsigned(AddressType.P2TR)[0]
    signed = await wallet(AddressType.P2TR)[1].sign(psbt)
    assert same_unsigned_tx(NET, psbt, signed.psbt)
    assert not same_unsigned_tx(NET, psbt, unsigned(AddressType.P2TR, locktime=1)[0])


async def test_a_signer_for_another_account_signs_nothing() -> None:
    psbt = unsigned(AddressType.P2WPKH)[0]
    with pytest.raises(SignerError, match="none of the PSBT's inputs"):
        await wallet(AddressType.P2TR)[1].sign(psbt)     # the same words, but set up for the BIP86 account


def test_build_refuses_inputs_it_cannot_describe() -> None:
    deriver, _ = wallet(AddressType.P2PKH)
    raw = funding(deriver, [50_000])
    txid = Txid(CTransaction.deserialize(raw).GetTxid()[::-1].hex())
    out = [PsbtOutputSpec(PAYOUT.script_pubkey(), Satoshis(40_000))]
    spk = script(deriver, 0, 0)
    with pytest.raises(InvalidPsbt, match="needs the whole funding transaction"):
        build_psbt(NET, [PsbtInputSpec(OutPoint(txid, 0), Satoshis(50_000), spk, origin(deriver, 0, 0))], out, 0)
    with pytest.raises(InvalidPsbt, match="does not hold that output"):
        build_psbt(NET, [PsbtInputSpec(OutPoint(txid, 0), Satoshis(50_001), spk, origin(deriver, 0, 0), raw)], out, 0)
    with pytest.raises(InvalidPsbt, match="does not give the script"):
        build_psbt(NET, [PsbtInputSpec(OutPoint(txid, 0), Satoshis(50_000), spk, origin(deriver, 0, 1), raw)], out, 0)
