"""Hardware wallet port (HWI): devices hold the keys; the server holds xpubs only."""
from __future__ import annotations

import abc

import attrs

from kaccy_bitcoin.domain.bitcoin import DerivationPath


@attrs.frozen
class Device:
    type: str
    path: str
    fingerprint: str
    model: str = ""


class HardwareWallet(abc.ABC):
    @abc.abstractmethod
    def enumerate(self) -> list[Device]:
        """Connected devices."""

    @abc.abstractmethod
    def xpub(self, device: Device, path: DerivationPath) -> str:
        """The extended public key at `path`."""

    @abc.abstractmethod
    def display_address(self, device: Device, path: DerivationPath) -> str:
        """Show the address on the device screen and return it."""

    @abc.abstractmethod
    def sign_psbt(self, device: Device, psbt: str) -> str:
        """Have the device sign a base64 PSBT; returns the signed PSBT."""
