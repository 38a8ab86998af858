"""A fake hardware wallet that hwilib finds where it looks devices up (hwilib.devices.<type>).

`plug_in(words)` registers this module as `hwilib.devices.fakedev` and lists it in
hwilib's device list; hwilib's own `enumerate`, `get_client` and `signtx` then drive
it, so the PSBT the device receives and returns goes through hwilib's PSBT code.
Inside, the "secure element" signs with keys from the words (python-bitcointx).
"""
from __future__ import annotations

import sys
from typing import Any

import hwilib.devices
from bip_utils import Base58Decoder, Base58Encoder, Bip32Secp256k1, Bip39SeedGenerator, P2WPKHAddrEncoder
from bitcointx import ChainParams
from bitcointx.core.key import CKey, KeyStore
from bitcointx.core.psbt import PartiallySignedTransaction
from hwilib.common import AddressType, Chain
from hwilib.hwwclient import HardwareWalletClient
from hwilib.key import ExtendedKey
from hwilib.psbt import PSBT

STATE: dict[str, Any] = {"words": None, "connected": False, "signed": 0}
_PARAMS = {Chain.MAIN: "bitcoin", Chain.TEST: "bitcoin/testnet", Chain.SIGNET: "bitcoin/signet",
           Chain.REGTEST: "bitcoin/regtest"}


def _master() -> Bip32Secp256k1:
    return Bip32Secp256k1.FromSeed(Bip39SeedGenerator(STATE["words"]).Generate())


def enumerate(password: str | None = None, expert: bool = False, chain: Chain = Chain.MAIN,
              allow_emulators: bool = False) -> list[dict[str, Any]]:
    if not STATE["connected"]:
        return []
    return [{"type": "fakedev", "path": "fake:0", "model": "fakedev_1",
             "fingerprint": _master().FingerPrint().ToBytes().hex(), "needs_pin_sent": False,
             "needs_passphrase_sent": False}]


class FakedevClient(HardwareWalletClient):
    def __init__(self, path: str, password: str | None = None, expert: bool = False,
                 chain: Chain = Chain.MAIN) -> None:
        super().__init__(path, password, expert, chain)
        self._m = _master()

    def get_master_fingerprint(self) -> bytes:
        return self._m.FingerPrint().ToBytes()

    def get_pubkey_at_path(self, bip32_path: str) -> ExtendedKey:
        """As real devices do: xpub on mainnet, tpub on the test chains."""
        node = self._m.DerivePath(bip32_path.replace("h", "'"))
        raw = Base58Decoder.CheckDecode(node.PublicKey().ToExtended())
        version = bytes.fromhex("0488b21e" if self.chain == Chain.MAIN else "043587cf")
        return ExtendedKey.deserialize(Base58Encoder.CheckEncode(version + raw[4:]))

    def sign_tx(self, psbt: PSBT) -> PSBT:
        fingerprint = self.get_master_fingerprint()
        with ChainParams(_PARAMS[self.chain]):
            inner = PartiallySignedTransaction.from_base64(psbt.serialize())
            keys = []
            for inp in inner.inputs:
                for pub, info in inp.derivation_map.items():
                    if bytes(info.master_fp) != fingerprint:
                        continue
                    node = self._m.DerivePath(str(info.path).replace("h", "'"))
                    if node.PublicKey().RawCompressed().ToBytes() == bytes(pub):
                        keys.append(CKey.from_secret_bytes(node.PrivateKey().Raw().ToBytes()))
            inner.sign(KeyStore(*keys), finalize=False)
            STATE["signed"] += len(keys)
            result = PSBT()
            result.deserialize(inner.to_base64())
            return result

    def display_singlesig_address(self, bip32_path: str, addr_type: AddressType) -> str:
        node = self._m.DerivePath(bip32_path.replace("h", "'"))
        hrp = {Chain.MAIN: "bc", Chain.REGTEST: "bcrt"}.get(self.chain, "tb")
        return P2WPKHAddrEncoder.EncodeKey(node.PublicKey().KeyObject(), hrp=hrp)

    def close(self) -> None:
        pass


def plug_in(words: str) -> None:
    STATE.update(words=words, connected=True, signed=0)
    sys.modules["hwilib.devices.fakedev"] = sys.modules[__name__]
    if "fakedev" not in hwilib.devices.__all__:
        hwilib.devices.__all__.append("fakedev")


def unplug() -> None:
    STATE["connected"] = False
