"""Signs PSBTs with keys derived from a BIP39 mnemonic (bip-utils), signatures by python-bitcointx.

The signer refuses to start when the account key its words give does not match the
platform's KACCY_XPUB: signing for one account while watching another loses money.
"""
from __future__ import annotations

from bip_utils import Bip32Secp256k1, Bip39MnemonicValidator, Bip39SeedGenerator
from bitcointx import ChainParams
from bitcointx.core.key import CKey, KeyStore

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.domain.psbt import parse_psbt, psbt_status
from kaccy_bitcoin.ports.signer import PsbtSigner, SignerError, SignResult


class SignerKeyMismatch(SignerError):
    code = "signer_key_mismatch"


class SoftwareSigner(PsbtSigner):
    name = "software"

    def __init__(self, mnemonic: str, passphrase: str, deriver: Bip32AddressDeriver) -> None:
        words = " ".join(mnemonic.split())
        try:
            valid = Bip39MnemonicValidator().IsValid(words)
        except Exception:  # noqa: BLE001 - bip-utils raises several types for bad words
            valid = False
        if not valid:
            raise SignerError("KACCY_SIGNER_MNEMONIC is not a valid BIP39 mnemonic")
        self._master = Bip32Secp256k1.FromSeed(Bip39SeedGenerator(words).Generate(passphrase))
        self.fingerprint = self._master.FingerPrint().ToBytes().hex()
        self._network = deriver.network
        account_path = str(deriver.path(0, 0)).rsplit("/", 2)[0]
        chain0 = deriver.public_key(0, 0)
        if self._master.DerivePath(f"{account_path}/0/0").PublicKey().RawCompressed().ToBytes() != chain0:
            raise SignerKeyMismatch(
                f"the account key of KACCY_SIGNER_MNEMONIC at {account_path} does not match KACCY_XPUB")

    def _key_for(self, fingerprint: bytes, path: str, pubkey: bytes) -> CKey | None:
        if fingerprint.hex() not in (self.fingerprint, "00000000"):
            return None
        node = self._master.DerivePath(path)
        if node.PublicKey().RawCompressed().ToBytes() != pubkey:
            return None
        return CKey.from_secret_bytes(node.PrivateKey().Raw().ToBytes())

    async def sign(self, psbt: str) -> SignResult:
        with ChainParams(self._network.chain_params):
            parsed = parse_psbt(self._network, psbt)
            keys = []
            for inp in parsed.inputs:
                for pub, info in inp.derivation_map.items():
                    key = self._key_for(bytes(info.master_fp), str(info.path).replace("h", "'"), bytes(pub))
                    if key is not None:
                        keys.append(key)
            if not keys:
                raise SignerError("none of the PSBT's inputs belong to this signer's keys")
            result = parsed.sign(KeyStore(*keys), finalize=False)
            signed = parsed.to_base64()
        status = psbt_status(self._network, signed)
        return SignResult(signed, status.complete, result.num_inputs_signed)
