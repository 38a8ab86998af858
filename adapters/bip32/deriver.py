"""Deposit and change addresses from an account-level xpub/ypub/zpub/tpub/upub/vpub.

SLIP-132 prefixes decide the script type where they say one (ypub/upub: P2SH-P2WPKH,
zpub/vpub: P2WPKH); xpub/tpub take the configured type. The account key is parsed
once by bip-utils and its two chain nodes (0: receive, 1: change) are cached, so each
address costs only the last, non-hardened public step (HMAC-SHA512 of the chain code
and the parent key, a libsecp256k1 tweak-add through coincurve) plus the encoding by
bip-utils' hash160 and bech32/base58 encoders. tests/test_hd_addresses.py checks the
result against bip-utils' own derivation and Bitcoin Core's `deriveaddresses`.
"""
from __future__ import annotations

import hashlib
import hmac
from concurrent.futures import ProcessPoolExecutor

import attrs
from coincurve import PublicKey
from bip_utils import (
    Base58Decoder,
    Base58Encoder,
    Bip32KeyNetVersions,
    Bip32Secp256k1,
    P2PKHAddrEncoder,
    P2SHAddrEncoder,
    P2TRAddrEncoder,
    SegwitBech32Encoder,
)
from bip_utils.utils.crypto.hash160 import Hash160


def _hash160_function():  # noqa: ANN202
    """hashlib's RIPEMD160(SHA256()) where OpenSSL provides it (4x faster), else bip-utils'."""
    try:
        hashlib.new("ripemd160", b"")
    except ValueError:
        return Hash160.QuickDigest
    sha256, new = hashlib.sha256, hashlib.new
    return lambda data: new("ripemd160", sha256(data).digest()).digest()


_hash160 = _hash160_function()

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
        self.account_xpub_original = key
        self.account_xpub = standard
        self._account_index = account.Index().ToInt()
        self._fingerprint = origin_fingerprint.lower() if origin_fingerprint else None
        self._chains = {0: account.ChildKey(0), 1: account.ChildKey(1)}
        self._nodes = {c: (n.ChainCode().ToBytes(), n.PublicKey().RawCompressed().ToBytes())
                       for c, n in self._chains.items()}
        self._encode = self._encoder()

    def _encoder(self):  # noqa: ANN202
        net = self.network
        hrp = _HRP[net]
        if self.address_type is AddressType.P2WPKH:
            return lambda pub: SegwitBech32Encoder.Encode(hrp, 0, _hash160(pub))
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
        return self._encode(self.public_key(chain, index))

    def addresses(self, chain: int, start: int, count: int) -> list[str]:
        if count < 0 or start < 0 or start + count > HARDENED:
            raise InvalidExtendedKey(f"address range out of bounds: start {start}, count {count}")
        self._chain(chain)
        chain_code, parent = self._nodes[chain]
        add = PublicKey(parent).add
        mac, sha512 = hmac.new, hashlib.sha512
        indexes = range(start, start + count)
        if self.address_type is AddressType.P2WPKH and _hash160 is not Hash160.QuickDigest:
            # The hot path, with every lookup hoisted out of the loop.
            encode, hrp = SegwitBech32Encoder.Encode, _HRP[self.network]
            ripemd, sha256 = hashlib.new, hashlib.sha256
            return [encode(hrp, 0, ripemd("ripemd160", sha256(
                        add(mac(chain_code, parent + i.to_bytes(4, "big"), sha512).digest()[:32]).format()
                    ).digest()).digest()) for i in indexes]
        encode_key = self._encode
        return [encode_key(add(mac(chain_code, parent + i.to_bytes(4, "big"), sha512).digest()[:32]).format())
                for i in indexes]

    def public_key(self, chain: int, index: int) -> bytes:
        """The compressed public key at chain/index (BIP32 CKDpub from the cached chain node)."""
        if not 0 <= index < HARDENED:
            raise InvalidExtendedKey(f"address index out of range: {index}")
        self._chain(chain)
        chain_code, parent = self._nodes[chain]
        tweak = hmac.new(chain_code, parent + index.to_bytes(4, "big"), hashlib.sha512).digest()[:32]
        return PublicKey(parent).add(tweak).format()

    def addresses_parallel(self, chain: int, start: int, count: int, workers: int = 2) -> list[str]:
        """Bulk pre-derivation across worker processes (for filling an address cache)."""
        if workers <= 1 or count < 2000:
            return self.addresses(chain, start, count)
        step = -(-count // workers)
        spans = [(s, min(step, start + count - s)) for s in range(start, start + count, step)]
        args = (self.account_xpub_original, self.network, self.address_type, self._fingerprint)
        with ProcessPoolExecutor(workers) as pool:
            parts = pool.map(_derive_span, [(args, chain, s, n) for s, n in spans])
            return [a for part in parts for a in part]

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


def _derive_span(job: tuple) -> list[str]:
    (key, network, kind, fingerprint), chain, start, count = job
    return Bip32AddressDeriver(key, network, kind, fingerprint).addresses(chain, start, count)
