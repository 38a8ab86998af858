"""Building, inspecting and finalizing PSBTs (BIP174) with python-bitcointx.

Pure computation: no keys, no node. Inputs carry their witness UTXO and BIP32
derivation (master fingerprint, path, public key) so a hardware wallet can sign;
every input signals RBF (BIP125) and the locktime is set against fee sniping.
"""
from __future__ import annotations

import binascii

import attrs
from bitcointx import ChainParams
from bitcointx.core import CMutableTransaction, CMutableTxIn, CMutableTxOut, COutPoint, CTxOut, lx
from bitcointx.core.key import BIP32Path, CPubKey
from bitcointx.core.psbt import PartiallySignedTransaction, PSBT_KeyDerivationInfo
from bitcointx.core.script import CScript
from bitcointx.core.serialize import SerializationError

from kaccy_bitcoin.domain.bitcoin import DerivationPath, Network, OutPoint, Txid
from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.money import Satoshis

RBF_SEQUENCE = 0xFFFFFFFD


class InvalidPsbt(DomainError):
    code = "invalid_psbt"


@attrs.frozen
class KeyOrigin:
    fingerprint: str          # 8 hex characters of the master key fingerprint
    path: DerivationPath
    pubkey: bytes


@attrs.frozen
class PsbtInputSpec:
    outpoint: OutPoint
    amount: Satoshis
    script_pubkey: bytes
    origin: KeyOrigin | None = None


@attrs.frozen
class PsbtOutputSpec:
    script_pubkey: bytes
    amount: Satoshis
    origin: KeyOrigin | None = None     # set for our own change output


@attrs.frozen
class PsbtStatus:
    inputs: int
    inputs_signed: int     # with at least one signature, or final
    inputs_final: int
    complete: bool         # every input is final or has all the signatures it needs
    fee: Satoshis | None


def _derivation(origin: KeyOrigin) -> tuple[CPubKey, PSBT_KeyDerivationInfo]:
    return CPubKey(origin.pubkey), PSBT_KeyDerivationInfo(bytes.fromhex(origin.fingerprint),
                                                         BIP32Path(str(origin.path).replace("'", "h"),
                                                                   hardened_marker="h"))


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
            psbt.set_utxo(CTxOut(spec.amount.value, CScript(spec.script_pubkey)), n, force_witness_utxo=True)
            if spec.origin:
                pub, info = _derivation(spec.origin)
                psbt.inputs[n].derivation_map[pub] = info
        for n, spec in enumerate(outputs):
            if spec.origin:
                pub, info = _derivation(spec.origin)
                psbt.outputs[n].derivation_map[pub] = info
        return psbt.to_base64()


def parse_psbt(network: Network, text: str) -> PartiallySignedTransaction:
    with ChainParams(network.chain_params):
        try:
            return PartiallySignedTransaction.from_base64(text)
        except (SerializationError, ValueError, binascii.Error, TypeError, IndexError) as exc:
            raise InvalidPsbt(f"not a valid base64 PSBT: {exc}") from None


def psbt_status(network: Network, text: str) -> PsbtStatus:
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, text)
        signed = final = 0
        for inp in psbt.inputs:
            if inp.is_final():
                final += 1
                signed += 1
            elif inp.partial_sigs:
                signed += 1
        trial = psbt.clone()
        from bitcointx.core.key import KeyStore

        result = trial.sign(KeyStore(), finalize=True)
        try:
            fee = Satoshis(trial.get_fee())
        except (ValueError, TypeError):
            fee = None
        return PsbtStatus(len(psbt.inputs), signed, final, result.is_final, fee)


def finalize_psbt(network: Network, text: str) -> tuple[str, bytes, Txid]:
    """Finalize every input from its signatures and extract the network transaction."""
    with ChainParams(network.chain_params):
        from bitcointx.core.key import KeyStore

        psbt = parse_psbt(network, text)
        result = psbt.sign(KeyStore(), finalize=True)
        if not result.is_final:
            missing = sum(1 for i in result.inputs_info if i is not None and not i.is_final)
            raise InvalidPsbt(f"cannot finalize: {missing} input(s) still need signatures")
        tx = psbt.extract_transaction()
        return psbt.to_base64(), tx.serialize(), Txid(tx.GetTxid()[::-1].hex())


P2WPKH_WITNESS_WEIGHT = 108   # item count, 72-byte signature, 33-byte key, with their lengths


def estimated_vsize(network: Network, text: str) -> int:
    """The signed transaction's virtual size, for P2WPKH inputs."""
    with ChainParams(network.chain_params):
        psbt = parse_psbt(network, text)
        base = len(psbt.unsigned_tx.serialize())
        return -(-(base * 4 + 2 + P2WPKH_WITNESS_WEIGHT * len(psbt.inputs)) // 4)
