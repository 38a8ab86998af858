"""Deposit and change addresses from an account-level xpub/ypub/zpub/tpub/upub/vpub.

SLIP-132 prefixes decide the script type where they say one (ypub/upub: P2SH-P2WPKH,
zpub/vpub: P2WPKH); xpub/tpub take the configured type. The account key is parsed
once and its two chain nodes (0: receive, 1: change) are cached, so each address
costs one public child derivation plus the encoding.
"""
from __future__ import annotations

import attrs
from bip_utils import (
    Base58Decoder,
    Base58Encoder,
    Bip32KeyNetVersions,
    Bip32Secp256k1,
    P2PKHAddrEncoder,
    P2SHAddrEncoder,
    P2TRAddrEncoder,
    P2WPKHAddrEncoder,
)

from kaccy_bitcoin.domain.bitcoin import HARDENED, AddressType, DerivationPath, Network
from kaccy_bitcoin.domain.errors import InvalidExtendedKey
from kaccy_bitcoin.ports.addresses import AddressDeriver


@attrs.frozen
class _Prefix:
    name: str
    mainnet: bool
    private: bool
    script: AddressType | None


_PREFIXES = {
    bytes.fromhex("0488b21e"): _Prefix("xpub", True, False, None),
    bytes.fromhex("049d7cb2"): _Prefix("ypub", True, False, AddressType.P2SH),
    bytes.fromhex("04b24746"): _Prefix("zpub", True, False, AddressType.P2WPKH),
    bytes.fromhex("043587cf"): _Prefix("tpub", False, False, None),
    bytes.fromhex("044a5262"): _Prefix("upub", False, False, AddressType.P2SH),
    bytes.fromhex("045f1cf6"): _Prefix("vpub", False, False, AddressType.P2WPKH),
    bytes.fromhex("0488ade4"): _Prefix("xprv", True, True, None),
    bytes.fromhex("049d7878"): _Prefix("yprv", True, True, None),
    bytes.fromhex("04b2430c"): _Prefix("zprv", True, True, None),
    bytes.fromhex("04358394"): _Prefix("tprv", False, True, None),
    bytes.fromhex("044a4e28"): _Prefix("uprv", False, True, None),
    bytes.fromhex("045f18bc"): _Prefix("vprv", False, True, None),
}
_STANDARD = {True: (bytes.fromhex("0488b21e"), bytes.fromhex("0488ade4")),
             False: (bytes.fromhex("043587cf"), bytes.fromhex("04358394"))}
_HRP = {Network.MAINNET: "bc", Network.TESTNET: "tb", Network.SIGNET: "tb", Network.REGTEST: "bcrt"}
_PURPOSE = {AddressType.P2PKH: 44, AddressType.P2SH: 49, AddressType.P2WPKH: 84, AddressType.P2TR: 86}
_SUPPORTED = frozenset(_PURPOSE)


def parse_address_type(text: str) -> AddressType:
    """KACCY_ADDRESS_TYPE: p2wpkh (default), p2sh-p2wpkh, p2pkh, p2tr."""
    names = {"p2wpkh": AddressType.P2WPKH, "p2sh-p2wpkh": AddressType.P2SH, "p2pkh": AddressType.P2PKH,
             "p2tr": AddressType.P2TR}
    try:
        return names[text.strip().lower()]
    except KeyError:
        raise InvalidExtendedKey(
            f"unknown address type {text!r}; expected one of {', '.join(names)}") from None


class Bip32AddressDeriver(AddressDeriver):
    def __init__(self, extended_key: str, network: Network,
                 address_type: AddressType = AddressType.P2WPKH,
                 origin_fingerprint: str | None = None) -> None:
        key = extended_key.strip()
        try:
            raw = Base58Decoder.CheckDecode(key)
        except Exception:  # bip-utils raises ValueError / Base58ChecksumError
            raise InvalidExtendedKey("KACCY_XPUB is not a valid base58check extended key") from None
        if len(raw) != 78:
            raise InvalidExtendedKey(f"extended key has {len(raw)} bytes, expected 78")
        prefix = _PREFIXES.get(raw[:4])
        if prefix is None:
            raise InvalidExtendedKey(f"unknown extended key version {raw[:4].hex()}")
        if prefix.private:
            raise InvalidExtendedKey(
                f"{prefix.name} is a private key: give the account's extended public key, "
                "the server never holds private keys")
        if prefix.mainnet != (network is Network.MAINNET):
            raise InvalidExtendedKey(
                f"a {prefix.name} key is for {'mainnet' if prefix.mainnet else 'test networks'}, "
                f"but the network is {network.value}")
        kind = prefix.script or address_type
        if kind not in _SUPPORTED:
            raise InvalidExtendedKey(f"address type {kind.value} cannot be derived from a single key")
        standard = Base58Encoder.CheckEncode(_STANDARD[prefix.mainnet][0] + raw[4:])
        net = Bip32KeyNetVersions(*_STANDARD[prefix.mainnet])
        try:
            account = Bip32Secp256k1.FromExtendedKey(standard, net)
        except Exception as exc:
            raise InvalidExtendedKey(f"extended key does not decode: {exc}") from None
        if account.Depth().ToInt() != 3:
            raise InvalidExtendedKey(
                f"expected an account-level key (depth 3, e.g. m/84'/1'/0'), got depth {account.Depth().ToInt()}")
        self.network = network
        self.address_type = kind
        self.account_xpub = standard
        self._account_index = account.Index().ToInt()
        self._fingerprint = origin_fingerprint.lower() if origin_fingerprint else None
        self._chains = {0: account.ChildKey(0), 1: account.ChildKey(1)}
        self._encode = self._encoder()

    def _encoder(self):  # noqa: ANN202
        net = self.network
        hrp = _HRP[net]
        if self.address_type is AddressType.P2WPKH:
            return lambda pub: P2WPKHAddrEncoder.EncodeKey(pub, hrp=hrp)
        if self.address_type is AddressType.P2TR:
            return lambda pub: P2TRAddrEncoder.EncodeKey(pub, hrp=hrp)
        ver = b"\x00" if net is Network.MAINNET else b"\x6f"
        if self.address_type is AddressType.P2PKH:
            return lambda pub: P2PKHAddrEncoder.EncodeKey(pub, net_ver=ver)
        sh = b"\x05" if net is Network.MAINNET else b"\xc4"
        return lambda pub: P2SHAddrEncoder.EncodeKey(pub, net_ver=sh)

    def _chain(self, chain: int):  # noqa: ANN202
        try:
            return self._chains[chain]
        except KeyError:
            raise InvalidExtendedKey(f"chain must be 0 (receive) or 1 (change), got {chain}") from None

    def address(self, chain: int, index: int) -> str:
        if not 0 <= index < HARDENED:
            raise InvalidExtendedKey(f"address index out of range: {index}")
        return self._encode(self._chain(chain).ChildKey(index).PublicKey().KeyObject())

    def addresses(self, chain: int, start: int, count: int) -> list[str]:
        node = self._chain(chain)
        encode = self._encode
        return [encode(node.ChildKey(i).PublicKey().KeyObject()) for i in range(start, start + count)]

    def public_key(self, chain: int, index: int) -> bytes:
        return self._chain(chain).ChildKey(index).PublicKey().RawCompressed().ToBytes()

    def descriptor(self, chain: int) -> str:
        self._chain(chain)
        origin = ""
        if self._fingerprint:
            origin = f"[{self._fingerprint}/{str(self._account_path())[2:]}]"
        key = f"{origin}{self.account_xpub}/{chain}/*"
        return {
            AddressType.P2WPKH: f"wpkh({key})",
            AddressType.P2SH: f"sh(wpkh({key}))",
            AddressType.P2PKH: f"pkh({key})",
            AddressType.P2TR: f"tr({key})",
        }[self.address_type]

    def _account_path(self) -> DerivationPath:
        return DerivationPath((
            _PURPOSE[self.address_type] | HARDENED,
            self.network.coin_type | HARDENED,
            self._account_index if self._account_index >= HARDENED else self._account_index | HARDENED,
        ))

    def path(self, chain: int, index: int) -> DerivationPath:
        return self._account_path().child(chain).child(index)

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint
