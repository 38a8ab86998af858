"""The swap keys port: one fresh key per swap, from the software signer's seed."""
from __future__ import annotations

import abc


class SwapKeys(abc.ABC):
    """Keys of the swap path (docs/swaps.md), by index; the secret never leaves the adapter."""

    @abc.abstractmethod
    def public_key(self, index: int) -> bytes:
        """The 33-byte compressed public key at `index`."""

    @abc.abstractmethod
    def sign(self, index: int, sighash: bytes) -> bytes:
        """A DER ECDSA signature (low S, no sighash byte) of the 32-byte `sighash` by the key at `index`."""
