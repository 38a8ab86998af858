"""Address derivation port: deposit and change addresses from an account xpub."""
from __future__ import annotations

import abc

from kaccy_bitcoin.domain.bitcoin import AddressType, DerivationPath, Network

RECEIVE = 0
CHANGE = 1


class AddressDeriver(abc.ABC):
    """Derives the platform's addresses; holds public keys only."""

    network: Network
    address_type: AddressType

    @abc.abstractmethod
    def address(self, chain: int, index: int) -> str:
        """The address at account/chain/index (chain 0 receive, 1 change)."""

    @abc.abstractmethod
    def addresses(self, chain: int, start: int, count: int) -> list[str]:
        """`count` consecutive addresses from `start`, in order."""

    @abc.abstractmethod
    def descriptor(self, chain: int) -> str:
        """The output descriptor (with checksum) whose range covers this chain."""

    @abc.abstractmethod
    def path(self, chain: int, index: int) -> DerivationPath:
        """The full BIP32 path of an address, from the master key."""

    def witness_script(self, chain: int, index: int) -> bytes | None:
        """The script a P2WSH address commits to; None for a single-key address."""
        return None

    def spend_weight(self) -> int | None:
        """The weight of spending one coin of this wallet once signed, when the address type
        alone does not say it (multisig); None otherwise."""
        return None

    def cosigners(self, chain: int, index: int) -> list[tuple[str, DerivationPath, bytes]]:
        """For a multisig address, every key as (master fingerprint, full path, compressed
        public key), in the order of its witness script; empty for a single-key address."""
        return []
