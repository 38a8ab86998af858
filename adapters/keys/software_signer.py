"""Signs PSBTs with keys derived from a BIP39 mnemonic (bip-utils), signatures by python-bitcointx.

ECDSA inputs (P2WPKH, P2SH-P2WPKH, P2PKH) are found through their BIP32 derivations and
signed by python-bitcointx's PSBT signer with SIGHASH_ALL. BIP86 taproot inputs are found
through their BIP371 taproot derivations and get a key-path Schnorr signature (BIP341
tweak without a script tree, SIGHASH_DEFAULT) stored as PSBT_IN_TAP_KEY_SIG.

The signer refuses to start when the account key its words give does not match the
platform's KACCY_XPUB, and signs only keys of that account, or of a BIP48 P2WSH account
(m/48'/coin'/n'/2') for a multisig wallet's input whose witness script names the key (as
one cosigner among several): signing for one account while watching another loses money.
"""
from __future__ import annotations

from bip_utils import Bip32Secp256k1, Bip39MnemonicValidator, Bip39SeedGenerator
from bitcointx import ChainParams
from bitcointx.core.key import CKey, KeyStore, XOnlyPubKey
from bitcointx.core.psbt import PartiallySignedTransaction, PSBT_Input
from bitcointx.core.script import SIGHASH_ALL
from bitcointx.wallet import CCoinKey, P2TRCoinAddress

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.domain.bitcoin import HARDENED, DerivationPath
from kaccy_bitcoin.domain.psbt import (
    P2TR,
    P2WSH,
    SIGHASH_DEFAULT,
    input_kind,
    parse_psbt,
    psbt_status,
    set_tap_key_sig,
    spent_output,
    tap_internal_key,
    tap_key_derivations,
    tap_key_sig,
    tap_merkle_root,
    taproot_key_path_sighash,
)
from kaccy_bitcoin.ports.signer import PsbtSigner, SignerError, SignResult


class SignerKeyMismatch(SignerError):
    code = "signer_key_mismatch"


def master_key(mnemonic: str, passphrase: str) -> Bip32Secp256k1:
    """The BIP32 master key of KACCY_SIGNER_MNEMONIC (BIP39, with its passphrase); SignerError for
    words that are not a valid mnemonic."""
    words = " ".join(mnemonic.split())
    try:
        valid = Bip39MnemonicValidator().IsValid(words)
    except Exception:  # noqa: BLE001 - bip-utils raises several types for bad words
        valid = False
    if not valid:
        raise SignerError("KACCY_SIGNER_MNEMONIC is not a valid BIP39 mnemonic")
    return Bip32Secp256k1.FromSeed(Bip39SeedGenerator(words).Generate(passphrase))


class SoftwareSigner(PsbtSigner):
    name = "software"

    def __init__(self, mnemonic: str, passphrase: str, deriver: Bip32AddressDeriver) -> None:
        self._master = master_key(mnemonic, passphrase)
        self.fingerprint = self._master.FingerPrint().ToBytes().hex()
        self._network = deriver.network
        self._account = deriver.path(0, 0).indexes[:-2]
        account_path = str(deriver.path(0, 0)).rsplit("/", 2)[0]
        chain0 = deriver.public_key(0, 0)
        if self._master.DerivePath(f"{account_path}/0/0").PublicKey().RawCompressed().ToBytes() != chain0:
            raise SignerKeyMismatch(
                f"the account key of KACCY_SIGNER_MNEMONIC at {account_path} does not match KACCY_XPUB")

    def _multisig_account(self, fingerprint: bytes, path: list[int]) -> bool:
        """A cosigner key of ours: our master fingerprint and a BIP48 P2WSH account of this network."""
        return (fingerprint.hex() == self.fingerprint and len(path) == 6
                and (path[0], path[1], path[3]) == (48 | HARDENED, self._account[1], 2 | HARDENED)
                and path[2] >= HARDENED)

    def _secret_for(self, fingerprint: bytes, path: list[int], pubkey: bytes, multisig: bool = False) -> bytes | None:
        """The private key at `path`, if `path` lies in the account KACCY_XPUB names (or, for a
        multisig input, in a BIP48 P2WSH account) and gives `pubkey` (33 bytes, or 32 for an
        x-only taproot key)."""
        ours = fingerprint.hex() in (self.fingerprint, "00000000") and tuple(path[:-2]) == self._account
        if not ours and not (multisig and self._multisig_account(fingerprint, path)):
            return None
        node = self._master.DerivePath(str(DerivationPath(tuple(path))))
        ours = node.PublicKey().RawCompressed().ToBytes()
        if (ours if len(pubkey) == 33 else ours[1:]) != pubkey:
            return None
        return node.PrivateKey().Raw().ToBytes()

    def _taproot_secret(self, psbt: PartiallySignedTransaction, n: int) -> bytes | None:
        """Our private key for input `n`'s BIP86 key path: a taproot derivation of ours whose
        key, tweaked without a script tree, is the output key the input spends."""
        inp = psbt.inputs[n]
        if tap_merkle_root(inp) is not None:
            return None           # a script tree: not a BIP86 output
        internal = tap_internal_key(inp)
        spent_script = spent_output(psbt, n).scriptPubKey
        for xonly, info in tap_key_derivations(inp):
            if internal is not None and xonly != internal:
                continue
            if P2TRCoinAddress.from_xonly_pubkey(XOnlyPubKey(xonly)).to_scriptPubKey() != spent_script:
                continue
            secret = self._secret_for(bytes(info.master_fp), list(info.path), xonly)
            if secret is not None:
                return secret
        return None

    @staticmethod
    def _require_sighash(inp: PSBT_Input, n: int, allowed: int) -> None:
        if inp.sighash_type not in (None, allowed):
            raise SignerError(f"input {n} asks for sighash type {inp.sighash_type}: this signer signs only "
                              f"{'DEFAULT' if allowed == SIGHASH_DEFAULT else 'ALL'}")

    async def sign(self, psbt: str) -> SignResult:
        with ChainParams(self._network.chain_params):
            parsed = parse_psbt(self._network, psbt)
            keys, ours, taproot_signed = [], 0, 0
            for n, inp in enumerate(parsed.inputs):
                if inp.is_final():
                    continue
                if input_kind(parsed, n) == P2TR:
                    secret = self._taproot_secret(parsed, n)
                    if secret is None:
                        continue
                    ours += 1
                    if tap_key_sig(inp) is None:
                        self._require_sighash(inp, n, SIGHASH_DEFAULT)
                        sighash = taproot_key_path_sighash(parsed, n)
                        set_tap_key_sig(inp, CCoinKey.from_secret_bytes(secret).sign_schnorr_tweaked(sighash))
                        taproot_signed += 1
                    continue
                multisig = input_kind(parsed, n) == P2WSH
                secrets = [secret for pub, info in inp.derivation_map.items()
                           if (secret := self._secret_for(bytes(info.master_fp), list(info.path), bytes(pub),
                                                          multisig))]
                if secrets:
                    ours += 1
                    self._require_sighash(inp, n, SIGHASH_ALL)
                    keys.extend(CKey.from_secret_bytes(secret) for secret in secrets)
            if not ours:
                raise SignerError("none of the PSBT's inputs belong to this signer's keys")
            result = parsed.sign(KeyStore(*keys), finalize=False)
            signed = parsed.to_base64()
        status = psbt_status(self._network, signed)
        return SignResult(signed, status.complete, result.num_inputs_signed + taproot_signed)
