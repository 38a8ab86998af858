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
