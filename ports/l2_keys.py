"""The layer-2 keys port: our Stacks and RSK account keys, from the software signer's seed."""
from __future__ import annotations

import abc

from kaccy_bitcoin.domain.l2_accounts import L2Accounts


class L2Keys(abc.ABC):
    """Keys at the paths of domain/l2_accounts.py; secrets leave the adapter only to sign."""

    @abc.abstractmethod
    def accounts(self) -> L2Accounts:
        """Our accounts' public keys (and so their addresses) on this network."""

    @abc.abstractmethod
    def stacks_secret(self) -> bytes:
        """The 32-byte private key of our Stacks account (to sign a Stacks transaction)."""

    @abc.abstractmethod
    def rsk_secret(self) -> bytes:
        """The 32-byte private key of our RSK account (to sign an RSK transaction)."""
