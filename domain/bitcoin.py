"""Bitcoin value objects: network, address, txid, outpoint, derivation path.

Parsing and encoding go through python-bitcointx (addresses) and bip-utils
(derivation paths); nothing here hand-writes bech32, base58 or BIP32.
"""
from __future__ import annotations

import enum
import functools
import re
from typing import TYPE_CHECKING

import attrs

from kaccy_bitcoin.domain.errors import InvalidAddress, InvalidDerivationPath, InvalidNetwork, InvalidTxid

if TYPE_CHECKING:
    from bitcointx.wallet import CCoinAddress


class Network(enum.Enum):
    MAINNET = "mainnet"
    TESTNET = "testnet"
    SIGNET = "signet"
    REGTEST = "regtest"

    @classmethod
    def parse(cls, text: str) -> Network:
        aliases = {"main": "mainnet", "bitcoin": "mainnet", "test": "testnet", "testnet3": "testnet"}
        name = aliases.get(text.strip().lower(), text.strip().lower())
        try:
            return cls(name)
        except ValueError:
            raise InvalidNetwork(
                f"unknown network {text!r}; expected one of mainnet, testnet, signet, regtest"
            ) from None

    @property
    def chain_params(self) -> str:
        """The python-bitcointx chain parameter name."""
        return {"mainnet": "bitcoin"}.get(self.value, f"bitcoin/{self.value}")

    @property
    def core_chain(self) -> str:
        """The name Bitcoin Core's getblockchaininfo reports as `chain`."""
        return {"mainnet": "main", "testnet": "test"}.get(self.value, self.value)

    @property
    def is_test(self) -> bool:
        return self is not Network.MAINNET

    @property
    def coin_type(self) -> int:
        """BIP44 coin type: 0 for mainnet, 1 for every test network."""
        return 0 if self is Network.MAINNET else 1


class AddressType(enum.Enum):
    P2PKH = "p2pkh"
    P2SH = "p2sh"
    P2WPKH = "p2wpkh"
    P2WSH = "p2wsh"
    P2TR = "p2tr"


@functools.cache
def _address_classes() -> tuple[tuple[type, AddressType], ...]:
    # Imported on first use, not with the module: python-bitcointx's wallet loads
    # libsecp256k1, which commands that parse no address (`order show`) never need.
    from bitcointx.wallet import (
        P2PKHCoinAddress,
        P2SHCoinAddress,
        P2TRCoinAddress,
        P2WPKHCoinAddress,
        P2WSHCoinAddress,
    )

    return (
        (P2WPKHCoinAddress, AddressType.P2WPKH),
        (P2WSHCoinAddress, AddressType.P2WSH),
        (P2TRCoinAddress, AddressType.P2TR),
        (P2SHCoinAddress, AddressType.P2SH),
        (P2PKHCoinAddress, AddressType.P2PKH),
    )


def _decode(text: str, network: Network) -> CCoinAddress:
    from bitcointx import ChainParams   # on first use: see _address_classes
    from bitcointx.wallet import CCoinAddress, CCoinAddressError

    with ChainParams(network.chain_params):
        try:
            return CCoinAddress(text)
        except (CCoinAddressError, ValueError, TypeError) as exc:
            raise InvalidAddress(f"{text!r} is not a valid {network.value} address ({exc})") from None


@attrs.frozen
class Address:
    """A Bitcoin address, valid for its network; its type is derived when parsed."""

    value: str
    network: Network
    type: AddressType = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.value, str) or not self.value or self.value != self.value.strip():
            raise InvalidAddress(f"not an address: {self.value!r}")
        decoded = _decode(self.value, self.network)
        for cls, kind in _address_classes():
            if isinstance(decoded, cls):
                object.__setattr__(self, "type", kind)
                break
        else:
            raise InvalidAddress(f"{self.value!r}: unsupported address type {type(decoded).__name__}")

    def script_pubkey(self) -> bytes:
        return bytes(_decode(self.value, self.network).to_scriptPubKey())

    def __str__(self) -> str:
        return self.value


_TXID = re.compile(r"^[0-9a-f]{64}$")


@attrs.frozen(order=True, cache_hash=True)   # hashed many times per poll (dict keys)
class Txid:
    """A transaction id in its usual (byte-reversed) lower-case hex form."""

    value: str = attrs.field(converter=lambda v: v.lower() if isinstance(v, str) else v)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.value, str) or not _TXID.match(self.value):
            raise InvalidTxid(f"not a txid (64 hex characters): {self.value!r}")

    def __str__(self) -> str:
        return self.value


def _check_vout(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise InvalidTxid(f"output index must be an integer in [0, 2^32): {value!r}")


@attrs.frozen(order=True, cache_hash=True)
class OutPoint:
    txid: Txid
    vout: int = attrs.field(validator=_check_vout)

    @classmethod
    def parse(cls, text: str) -> OutPoint:
        txid, sep, vout = text.partition(":")
        if not sep or not vout.isdigit():
            raise InvalidTxid(f"not an outpoint (txid:vout): {text!r}")
        return cls(Txid(txid), int(vout))

    def __str__(self) -> str:
        return f"{self.txid.value}:{self.vout}"


HARDENED = 0x80000000


@attrs.frozen
class DerivationPath:
    """A BIP32 path such as m/84'/1'/0'/0/5, held as its integer indexes."""

    indexes: tuple[int, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        for i in self.indexes:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < 2**32:
                raise InvalidDerivationPath(f"derivation index out of range: {i!r}")

    @classmethod
    def parse(cls, text: str) -> DerivationPath:
        from bip_utils import Bip32PathParser   # on first use: bip-utils imports its whole package

        cleaned = text.strip().replace("h", "'").replace("H", "'")
        try:
            path = Bip32PathParser.Parse(cleaned)
        except Exception as exc:  # bip-utils raises its own Bip32PathError
            raise InvalidDerivationPath(f"not a derivation path: {text!r} ({exc})") from None
        if cleaned not in ("m", "") and not cleaned.startswith("m/"):
            raise InvalidDerivationPath(f"derivation path must start at m/: {text!r}")
        return cls(tuple(int(e) for e in path))

    def child(self, index: int, hardened: bool = False) -> DerivationPath:
        return DerivationPath(self.indexes + (index | HARDENED if hardened else index,))

    def __str__(self) -> str:
        parts = [f"{i - HARDENED}'" if i >= HARDENED else str(i) for i in self.indexes]
        return "/".join(["m", *parts])


def spent_outpoints(raw_tx: bytes) -> list[OutPoint]:
    """The outputs a serialized transaction spends (its inputs' previous outpoints)."""
    from bitcointx.core import CTransaction

    tx = CTransaction.deserialize(raw_tx)
    return [OutPoint(Txid(i.prevout.hash[::-1].hex()), i.prevout.n) for i in tx.vin]


def transaction_id(raw_tx: bytes) -> Txid:
    """The id of a serialized transaction."""
    from bitcointx.core import CTransaction

    return Txid(CTransaction.deserialize(raw_tx).GetTxid()[::-1].hex())
