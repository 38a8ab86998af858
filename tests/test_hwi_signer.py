"""The HWI signer through hwilib, with a fake device plugged in where hwilib looks devices up."""
from __future__ import annotations

import pytest
from bip_utils import Bip39SeedGenerator, Bip32Secp256k1

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.hwi.hardware_wallet import HwiHardwareWallet, HwiSigner, NoDevice, WrongDevice
from kaccy_bitcoin.domain.bitcoin import Address, DerivationPath, Network, OutPoint, Txid
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.psbt import KeyOrigin, PsbtInputSpec, PsbtOutputSpec, build_psbt
from tests import fake_hwi_device
from tests.test_withdrawals_regtest import funded_shop

pytestmark = pytest.mark.node


def fingerprint(words: str) -> str:
    return Bip32Secp256k1.FromSeed(Bip39SeedGenerator(words).Generate()).FingerPrint().ToBytes().hex()


async def test_hwi_device_lookup_xpub_address_and_signing(node, tmp_path) -> None:
    shop = await funded_shop(node, tmp_path)
    fp = fingerprint(shop.words)
    shop.env["KACCY_XPUB_FINGERPRINT"] = fp
    del shop.env["KACCY_SIGNER_MNEMONIC"]   # the server holds no keys: the device does
    dest = await node.call("getnewaddress", wallet="miner")
    w = shop.cli("withdraw", "create", "--to", dest, "--amount-sat", "90000")[1]

    wallet = HwiHardwareWallet(Network.REGTEST)
    fake_hwi_device.plug_in(shop.words)
    try:
        (device,) = wallet.enumerate()
        assert (device.type, device.fingerprint) == ("fakedev", fp)
        deriver = Bip32AddressDeriver(shop.vpub, Network.REGTEST)
        account = DerivationPath.parse("m/84'/1'/0'")
        xpub = wallet.xpub(device, account)
        assert Bip32AddressDeriver(xpub, Network.REGTEST).address(0, 3) == deriver.address(0, 3)
        assert wallet.display_address(device, deriver.path(0, 7)) == deriver.address(0, 7)

        container = shop.container()
        sign = container.services.sign_withdrawal()
        signed = await sign(w["withdrawal_id"], "hwi")
        assert signed["state"] == "signed" and fake_hwi_device.STATE["signed"] == len(w["inputs"])
        closing = container.shutdown_resources()
        if closing is not None:
            await closing
    finally:
        fake_hwi_device.unplug()
    txid = shop.cli("withdraw", "broadcast", w["withdrawal_id"])[1]["txid"]
    assert txid in await node.call("getrawmempool")


async def test_no_device_and_wrong_device_are_clear_errors(node, tmp_path) -> None:
    words, vpub = node.fresh_vpub()
    signer = HwiSigner(HwiHardwareWallet(Network.REGTEST), Network.REGTEST, fingerprint(words))
    deriver = Bip32AddressDeriver(vpub, Network.REGTEST)
    script = Address(deriver.address(0, 0), Network.REGTEST).script_pubkey()
    psbt = build_psbt(Network.REGTEST, [PsbtInputSpec(OutPoint(Txid("ab" * 32), 0), Satoshis(10_000), script,
                                                      KeyOrigin(fingerprint(words), deriver.path(0, 0),
                                                                deriver.public_key(0, 0)))],
                      [PsbtOutputSpec(script, Satoshis(9_000))], locktime=0)
    fake_hwi_device.unplug()
    with pytest.raises(NoDevice, match="no hardware wallet is connected"):
        await signer.sign(psbt)
    other_words, _ = node.fresh_vpub()
    fake_hwi_device.plug_in(other_words)
    try:
        with pytest.raises(WrongDevice, match=f"no connected hardware wallet has fingerprint {fingerprint(words)}"):
            await signer.sign(psbt)
    finally:
        fake_hwi_device.unplug()
