"""Named wallets: the single-key account of KACCY_XPUB (`default`) and M-of-N multisig wallets.

A multisig wallet is a P2WSH `wsh(sortedmulti(M, K1/<chain>/*, ..., KN/<chain>/*))` (BIP48
script type 2'), each key an account-level extended public key with its origin,
`[fingerprint/48h/1h/0h/2h]tpub...`. Every wallet has a number: the default wallet is 0,
each added one the next free number. The address book keeps one pair of chains per wallet:
wallet `n`'s receive and change chains are the book's chains `2n` and `2n + 1`, so the
default wallet's addresses are where they always were (chains 0 and 1).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re

import attrs
from kaccy_bitcoin.domain.bitcoin import HARDENED, DerivationPath, Network
from kaccy_bitcoin.domain import errors
from kaccy_bitcoin.domain.errors import DomainError

DEFAULT = "default"
BIP48_PURPOSE = 48
BIP48_P2WSH = 2
MAX_KEYS = 15       # Bitcoin Core's limit for sortedmulti keys in wsh()
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
WALLET_NAME_PATTERN = _NAME.pattern   # the HTTP API documents and checks the same
_KEY = re.compile(r"^\[([0-9a-fA-F]{8})((?:/\d+['h]?)+)\]([1-9A-HJ-NP-Za-km-z]{100,120})$")
_VERSIONS = {True: ("0488b21e", "0488ade4"), False: ("043587cf", "04358394")}   # xpub/xprv, tpub/tprv


class InvalidWallet(DomainError):
    """A wallet definition that cannot be used: a bad name, threshold or key expression."""

    code = "invalid_wallet"


class WalletExists(DomainError):
    """A wallet of that name exists with another definition."""

    code = "wallet_exists"


UnknownWallet = errors.UnknownWallet   # one error for "no such wallet", wherever it is raised


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidWallet(f"wallet name {name!r}: use 1 to 32 lower-case letters, digits, '-' or '_', "
                            "starting with a letter or digit")
    return name


def book_chain(number: int, chain: int) -> int:
    """The address book's chain for a wallet's receive (0) or change (1) chain."""
    return 2 * number + chain


@attrs.frozen
class CosignerKey:
    """One cosigner's account key, `[fingerprint/48h/coin h/account h/2h]xpub`."""

    fingerprint: str          # 8 lower-case hex digits
    path: DerivationPath      # from the cosigner's master key to the account
    xpub: str                 # base58, as given (tpub on test networks, xpub on mainnet)

    @classmethod
    def parse(cls, text: str, network: Network) -> CosignerKey:
        m = _KEY.match(text.strip())
        if not m:
            raise InvalidWallet(f"key {text!r}: expected a key expression with its origin, "
                                "[fingerprint/48h/1h/0h/2h]tpub... (no /0/* suffix)")
        fingerprint, steps, xpub = m.group(1).lower(), m.group(2), m.group(3)
        try:
            path = DerivationPath.parse("m" + steps)
        except DomainError as exc:
            raise InvalidWallet(f"key {text!r}: bad origin path: {exc}") from None
        coin = network.coin_type | HARDENED
        if (len(path.indexes) != 4 or path.indexes[0] != BIP48_PURPOSE | HARDENED or path.indexes[1] != coin
                or path.indexes[2] < HARDENED or path.indexes[3] != BIP48_P2WSH | HARDENED):
            raise InvalidWallet(f"key {text!r}: the origin must be a BIP48 P2WSH account "
                                f"m/48h/{network.coin_type}h/<account>h/2h for {network.value}")
        from bip_utils import Bip32KeyNetVersions, Bip32Secp256k1   # on first use, as DerivationPath does

        mainnet = network is Network.MAINNET
        versions = Bip32KeyNetVersions(*(bytes.fromhex(v) for v in _VERSIONS[mainnet]))
        try:
            node = Bip32Secp256k1.FromExtendedKey(xpub, versions)
        except Exception as exc:  # noqa: BLE001 - bip-utils raises several types for a bad key
            raise InvalidWallet(f"key {text!r}: not a {'xpub' if mainnet else 'tpub'} for {network.value} "
                                f"({exc})") from None
        if not node.IsPublicOnly():
            raise InvalidWallet(f"key {text!r} is a private key: give the cosigner's extended public key")
        if node.Depth().ToInt() != 4:
            raise InvalidWallet(f"key {text!r}: expected an account key at depth 4, got depth {node.Depth().ToInt()}")
        return cls(fingerprint, path, xpub)

    @property
    def origin(self) -> str:
        return f"[{self.fingerprint}/{str(self.path)[2:].replace(chr(39), 'h')}]"

    def expression(self) -> str:
        return f"{self.origin}{self.xpub}"


@attrs.frozen
class Wallet:
    """A named wallet. `keys` is empty for the single-key default wallet."""

    name: str
    number: int
    threshold: int = 1
    keys: tuple[CosignerKey, ...] = ()
    created_at: dt.datetime | None = None

    @classmethod
    def multisig(cls, name: str, number: int, threshold: int, keys: list[CosignerKey],
                 created_at: dt.datetime) -> Wallet:
        check_name(name)
        if name == DEFAULT:
            raise InvalidWallet("the wallet `default` is the one KACCY_XPUB configures; choose another name")
        if not 2 <= len(keys) <= MAX_KEYS:
            raise InvalidWallet(f"a multisig wallet needs 2 to {MAX_KEYS} --key, got {len(keys)}")
        if len({k.xpub for k in keys}) != len(keys):
            raise InvalidWallet("the same key is given twice")
        if not 1 <= threshold <= len(keys):
            raise InvalidWallet(f"--threshold must be from 1 to {len(keys)} (the number of keys), got {threshold}")
        return cls(name, number, threshold, tuple(keys), created_at)

    @property
    def is_multisig(self) -> bool:
        return bool(self.keys)

    def policy(self, single_type: str = "p2wpkh") -> str:
        if self.is_multisig:
            return f"{self.threshold}-of-{len(self.keys)} p2wsh"
        return f"single-sig {single_type}"

    def definition(self) -> str:
        """What decides the wallet's addresses: the threshold and the set of keys (sortedmulti
        sorts them at every index, so their order does not matter), as a SHA-256 digest."""
        text = f"{self.threshold}:" + ",".join(sorted(k.expression() for k in self.keys))
        return hashlib.sha256(text.encode()).hexdigest()

    def same_definition(self, other: Wallet) -> bool:
        return self.definition() == other.definition()

    def book_chain(self, chain: int) -> int:
        return book_chain(self.number, chain)
