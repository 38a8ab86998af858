"""HardwareWallet and PsbtSigner over hwilib: enumerate, get xpub, display address, sign.

hwilib talks to USB devices synchronously, so every call runs in a worker thread.
The signer picks the connected device whose master fingerprint is the platform's;
no device, or only other devices, is a clear SignerError.
"""
from __future__ import annotations

import asyncio

from hwilib import commands
from hwilib.common import AddressType as HwiAddressType
from hwilib.common import Chain
from hwilib.errors import HWWError

from kaccy_bitcoin.domain.bitcoin import AddressType, DerivationPath, Network
from kaccy_bitcoin.domain.psbt import multisig_fingerprints, psbt_status
from kaccy_bitcoin.ports.hardware_wallet import Device, HardwareWallet
from kaccy_bitcoin.ports.signer import PsbtSigner, SignerError, SignResult

_CHAIN = {Network.MAINNET: Chain.MAIN, Network.TESTNET: Chain.TEST, Network.SIGNET: Chain.SIGNET,
          Network.REGTEST: Chain.REGTEST}
_ADDR = {AddressType.P2WPKH: HwiAddressType.WIT, AddressType.P2SH: HwiAddressType.SH_WIT,
         AddressType.P2PKH: HwiAddressType.LEGACY, AddressType.P2TR: HwiAddressType.TAP}


class NoDevice(SignerError):
    code = "no_hardware_wallet"


class WrongDevice(SignerError):
    code = "wrong_hardware_wallet"


class HwiHardwareWallet(HardwareWallet):
    def __init__(self, network: Network, address_type: AddressType = AddressType.P2WPKH) -> None:
        self._chain = _CHAIN[network]
        self._addr = _ADDR[address_type]

    def enumerate(self) -> list[Device]:
        found = []
        for d in commands.enumerate(chain=self._chain):
            if d.get("error") or not d.get("fingerprint"):
                continue
            found.append(Device(d["type"], d["path"], d["fingerprint"], d.get("model", "")))
        return found

    def _client(self, device: Device):  # noqa: ANN202
        try:
            client = commands.get_client(device.type, device.path, chain=self._chain)
        except HWWError as exc:
            raise SignerError(f"cannot open {device.type} at {device.path}: {exc.get_msg()}") from None
        if client is None:
            raise NoDevice(f"no client for {device.type} at {device.path}")
        return client

    def xpub(self, device: Device, path: DerivationPath) -> str:
        client = self._client(device)
        try:
            return commands.getxpub(client, str(path))["xpub"]
        finally:
            client.close()

    def display_address(self, device: Device, path: DerivationPath) -> str:
        client = self._client(device)
        try:
            return commands.displayaddress(client, path=str(path), addr_type=self._addr)["address"]
        finally:
            client.close()

    def sign_psbt(self, device: Device, psbt: str) -> str:
        client = self._client(device)
        try:
            return commands.signtx(client, psbt)["psbt"]
        except HWWError as exc:
            raise SignerError(f"{device.type} refused to sign: {exc.get_msg()}") from None
        finally:
            client.close()


class HwiSigner(PsbtSigner):
    name = "hwi"

    def __init__(self, wallet: HardwareWallet, network: Network, fingerprint: str) -> None:
        self._wallet = wallet
        self._network = network
        self._fingerprint = fingerprint.lower()

    def _device(self, fingerprints: list[str]) -> Device:
        devices = self._wallet.enumerate()
        if not devices:
            raise NoDevice("no hardware wallet is connected (or it is locked)")
        for fingerprint in fingerprints:
            for device in devices:
                if device.fingerprint.lower() == fingerprint:
                    return device
        seen = ", ".join(f"{d.type} {d.fingerprint}" for d in devices)
        raise WrongDevice(f"no connected hardware wallet has fingerprint {' or '.join(fingerprints)} "
                          f"(connected: {seen})")

    def _fingerprints(self, psbt: str) -> list[str]:
        """The devices that may sign: KACCY_XPUB_FINGERPRINT's, then those of the cosigners of a
        multisig input (any one of them may be the device plugged in)."""
        wanted = [] if self._fingerprint in ("", "00000000") else [self._fingerprint]
        for fingerprint in multisig_fingerprints(self._network, psbt):
            if fingerprint not in wanted:
                wanted.append(fingerprint)
        if not wanted:
            raise SignerError("the HWI signer needs KACCY_XPUB_FINGERPRINT (the device's master fingerprint)")
        return wanted

    async def sign(self, psbt: str) -> SignResult:
        fingerprints = self._fingerprints(psbt)
        before = psbt_status(self._network, psbt)
        device = await asyncio.to_thread(self._device, fingerprints)
        signed = await asyncio.to_thread(self._wallet.sign_psbt, device, psbt)
        after = psbt_status(self._network, signed)
        if (after.inputs_signed, after.signatures) == (before.inputs_signed, before.signatures) and not after.complete:
            raise SignerError(f"{device.type} {device.fingerprint} signed none of the inputs")
        return SignResult(signed, after.complete, after.inputs_signed - before.inputs_signed)
