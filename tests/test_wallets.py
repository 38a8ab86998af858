"""Wallets and custody tiers without a node: cosigner keys, the multisig deriver and its PSBTs
(signed by the software signer, combined, checked, finalized and verified by script
evaluation), the wallet repository on every storage, tier bands and the custody status."""
from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal

import attrs
import pytest
from hypothesis import given, settings, strategies as st
from bip_utils import Bip32KeyNetVersions, Bip32Secp256k1, Bip39SeedGenerator, Bip84, Bip84Coins
from bitcointx import ChainParams
from bitcointx.core import CTransaction
from bitcointx.core.script import CScript
from bitcointx.core.scripteval import SCRIPT_VERIFY_P2SH, SCRIPT_VERIFY_WITNESS, VerifyScript

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.bip32.multisig import MultisigAddressDeriver
from kaccy_bitcoin.adapters.keys.software_signer import SoftwareSigner
from kaccy_bitcoin.domain.bitcoin import Address, Network, OutPoint, Txid
from kaccy_bitcoin.domain.coin_selection import multisig_input_weight
from kaccy_bitcoin.domain.custody import CustodyPolicy, InvalidCustodyConfig, TierExceeded
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.psbt import (
    BadSignature,
    KeyOrigin,
    PsbtInputSpec,
    PsbtMismatch,
    PsbtOutputSpec,
    build_psbt,
    estimated_weight,
    finalize_psbt,
    parse_psbt,
    psbt_status,
)
from kaccy_bitcoin.domain.psbt_signatures import combine_psbts, verify_signatures
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.domain.wallets import CosignerKey, InvalidWallet, Wallet

NET = Network.REGTEST
TEST_NET = Bip32KeyNetVersions(bytes.fromhex("043587cf"), bytes.fromhex("04358394"))
WORDS = ["abandon " * 11 + "about",
         "legal winner thank year wave sausage worth useful legal winner thank yellow",
         "letter advice cage absurd amount doctor acoustic avoid letter advice cage above"]
AT = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@functools.cache
def key(n: int) -> str:
    master = Bip32Secp256k1.FromSeed(Bip39SeedGenerator(WORDS[n]).Generate(), TEST_NET)
    return f"[{master.FingerPrint().ToBytes().hex()}/48h/1h/0h/2h]" + \
        master.DerivePath("m/48'/1'/0'/2'").PublicKey().ToExtended()


def two_of_three() -> Wallet:
    return Wallet.multisig("treasury", 1, 2, [CosignerKey.parse(key(n), NET) for n in range(3)], AT)


def signer(n: int) -> SoftwareSigner:
    account = Bip84.FromSeed(Bip39SeedGenerator(WORDS[n]).Generate(), Bip84Coins.BITCOIN_TESTNET).Purpose().Coin()
    deriver = Bip32AddressDeriver(account.Account(0).PublicKey().ToExtended(), NET)
    return SoftwareSigner(WORDS[n], "", deriver)


def test_cosigner_keys_are_checked() -> None:
    parsed = CosignerKey.parse(key(0), NET)
    assert parsed.expression() == key(0) and parsed.fingerprint == key(0)[1:9]
    bad = [key(0).replace("/2h]", "/1h]"),                  # BIP48 script type 1' is P2SH-P2WSH
           key(0).replace("/1h/0h", "/0h/0h"),                # mainnet coin type on regtest
           key(0).split("]")[1],                              # no origin
           key(0)[:-3] + "abc"]                               # a broken checksum
    for text in bad:
        with pytest.raises(InvalidWallet):
            CosignerKey.parse(text, NET)
    with pytest.raises(InvalidWallet):
        CosignerKey.parse(key(0), Network.MAINNET)
    keys = [CosignerKey.parse(key(n), NET) for n in range(3)]
    for threshold, given in ((0, keys), (4, keys), (2, keys[:1]), (2, [keys[0], keys[0]])):
        with pytest.raises(InvalidWallet):
            Wallet.multisig("treasury", 1, threshold, given, AT)
    for name in ("default", "Bad Name", ""):
        with pytest.raises(InvalidWallet):
            Wallet.multisig(name, 1, 2, keys, AT)


def test_multisig_deriver_sorts_keys_and_describes_itself() -> None:
    d = MultisigAddressDeriver(two_of_three(), NET)
    assert d.descriptor(0).startswith("wsh(sortedmulti(2,") and "/0/*" in d.descriptor(0) and "#" in d.descriptor(0)
    assert d.descriptor(1).count("/1/*") == 3
    cosigners = d.cosigners(0, 7)
    assert [c[2] for c in cosigners] == sorted(c[2] for c in cosigners)
    assert {str(c[1]).rsplit("/", 2)[1:] == ["0", "7"] for c in cosigners} == {True}
    assert Address(d.address(0, 7), NET).type.value == "p2wsh"
    assert d.address(0, 7) != d.address(1, 7) and d.spend_weight() == multisig_input_weight(2, 3) == 418


def multisig_psbt(d: MultisigAddressDeriver, amount: int = 100_000) -> tuple[str, bytes]:
    spk = Address(d.address(0, 3), NET).script_pubkey()
    spec = PsbtInputSpec(OutPoint(Txid("11" * 32), 1), Satoshis(amount), spk, witness_script=d.witness_script(0, 3),
                         cosigners=tuple(KeyOrigin(fp, path, pub) for fp, path, pub in d.cosigners(0, 3)))
    change = PsbtOutputSpec(Address(d.address(1, 0), NET).script_pubkey(), Satoshis(amount - 30_000 - 1_000),
                            witness_script=d.witness_script(1, 0),
                            cosigners=tuple(KeyOrigin(fp, path, pub) for fp, path, pub in d.cosigners(1, 0)))
    pay = PsbtOutputSpec(bytes.fromhex("0014") + b"\x22" * 20, Satoshis(30_000))
    return build_psbt(NET, [spec], [pay, change], locktime=100), spk


async def test_two_of_three_psbt_signed_by_two_software_signers_combined_and_valid() -> None:
    d = MultisigAddressDeriver(two_of_three(), NET)
    unsigned, spk = multisig_psbt(d)
    parsed = parse_psbt(NET, unsigned)
    assert parsed.inputs[0].witness_script and len(parsed.inputs[0].derivation_map) == 3
    assert len(parsed.outputs[1].derivation_map) == 3 and parsed.outputs[1].witness_script
    a = (await signer(0).sign(unsigned)).psbt
    b = (await signer(1).sign(unsigned)).psbt
    c = (await signer(2).sign(unsigned)).psbt
    assert not psbt_status(NET, a).complete and psbt_status(NET, a).signatures == 1
    verify_signatures(NET, a)
    both = combine_psbts(NET, a, b)
    assert psbt_status(NET, both).complete and psbt_status(NET, both).signatures == 2
    every = combine_psbts(NET, both, c)                      # a third signature changes nothing that matters
    for signed in (both, every):
        _, raw, _ = finalize_psbt(NET, signed)
        with ChainParams(NET.chain_params):
            tx = CTransaction.deserialize(raw)
            VerifyScript(tx.vin[0].scriptSig, CScript(spk), tx, 0, flags={SCRIPT_VERIFY_P2SH, SCRIPT_VERIFY_WITNESS},
                         amount=100_000, witness=tx.wit.vtxinwit[0].scriptWitness)
        # the size estimated before signing is what the signed transaction weighs (71-byte signatures
        # assumed, so up to one weight unit per signature more)
        assert 0 <= len(tx.serialize(include_witness=False)) * 3 + len(tx.serialize()) - estimated_weight(NET, unsigned) <= 2
    other, _ = multisig_psbt(d, 200_000)
    with pytest.raises(PsbtMismatch):
        combine_psbts(NET, a, other)


async def test_signatures_outside_the_set_or_that_do_not_verify_are_refused() -> None:
    d = MultisigAddressDeriver(two_of_three(), NET)
    unsigned, _ = multisig_psbt(d)
    a = (await signer(0).sign(unsigned)).psbt
    with ChainParams(NET.chain_params):
        parsed = parse_psbt(NET, a)
        inp = parsed.inputs[0]
        pub, sig = next(iter(inp.partial_sigs.items()))
        inp.partial_sigs[pub] = sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]
        broken = parsed.to_base64()
    with pytest.raises(BadSignature):
        combine_psbts(NET, unsigned, broken)
    with pytest.raises(BadSignature):
        verify_signatures(NET, broken)
    # The default account's words do not sign BIP48 keys of another master key.
    assert psbt_status(NET, combine_psbts(NET, unsigned, a)).signatures == 1


def test_wallet_repository(uow_factory) -> None:  # noqa: ANN001
    wallet = two_of_three()
    with uow_factory() as uow:
        assert uow.wallets.next_number() == 1 and uow.wallets.all() == []
        uow.wallets.add(wallet)
        uow.commit()
    with uow_factory.read() as uow:
        assert uow.wallets.get("treasury") == wallet and uow.wallets.by_number(1) == wallet
        assert uow.wallets.all() == [wallet] and uow.wallets.next_number() == 2 and uow.wallets.get("x") is None
    with uow_factory() as uow:
        with pytest.raises(ConcurrentUpdate):
            uow.wallets.add(wallet)
        with pytest.raises(ConcurrentUpdate):
            uow.wallets.add(attrs.evolve(wallet, name="other", threshold=3))   # its number is taken
        with pytest.raises(ConcurrentUpdate):
            uow.wallets.add(attrs.evolve(wallet, name="other", number=2))      # the same keys and threshold
    with uow_factory.read() as uow:
        assert uow.wallets.by_definition(wallet.definition()) == wallet
        assert uow.wallets.by_definition(attrs.evolve(wallet, keys=wallet.keys[::-1]).definition()) == wallet


def test_custody_tiers_choose_and_cap() -> None:
    policy = CustodyPolicy.parse("hot=default:2000000,warm=treasury:50000000,cold=vault", "hot=5,warm=25,cold=70")
    assert [(t.name, t.wallet, t.cap_sat, t.target_pct) for t in policy.tiers] == [
        ("hot", "default", 2_000_000, Decimal(5)), ("warm", "treasury", 50_000_000, Decimal(25)),
        ("cold", "vault", None, Decimal(70))]
    assert [policy.choose(a) for a in (1, 2_000_000, 2_000_001, 50_000_001)] == ["default", "default", "treasury",
                                                                                 "vault"]
    policy.check("treasury", 50_000_000)
    policy.check("vault", 10**15)
    policy.check("elsewhere", 10**15)
    with pytest.raises(TierExceeded) as refused:
        policy.check("default", 2_000_001)
    assert refused.value.code == "tier_exceeded" and refused.value.cap_sat == 2_000_000
    assert CustodyPolicy.parse(None).choose(10**9) is None
    for tiers, targets in (("hot=default", "hot=5"), ("hot=default:5,warm=x:3", None), ("hot=default,warm=x:3", None),
                           ("hot=default:5,hot=x", None), ("hot", None), ("hot=default:-1", None),
                           ("hot=default:5,warm=x", "hot=60,warm=50"), ("hot=default:5", "cold=5"), (None, "hot=5")):
        if tiers == "hot=default" and targets == "hot=5":
            CustodyPolicy.parse(tiers, targets)   # one uncapped tier is fine
            continue
        with pytest.raises(InvalidCustodyConfig):
            CustodyPolicy.parse(tiers, targets)


def test_custody_status_proposes_a_sweep_or_a_refill() -> None:
    policy = CustodyPolicy.parse("hot=default:2000000,warm=treasury:50000000,cold=vault", "hot=10,warm=30,cold=60")
    status = policy.status({"default": 300_000, "treasury": 700_000})
    assert status["total_sat"] == 1_000_000
    assert [(r["tier"], r["balance_sat"], r["target_sat"], r["share_pct"]) for r in status["tiers"]] == [
        ("hot", 300_000, 100_000, "30.00"), ("warm", 700_000, 300_000, "70.00"), ("cold", 0, 600_000, "0.00")]
    assert status["proposals"] == [{
        "action": "sweep", "from_tier": "hot", "to_tier": "warm",
        "withdrawal": {"wallet": "default", "to_wallet": "treasury", "amount_sat": 200_000},
        "command": "kaccy-bitcoin withdraw create --wallet default --to-wallet treasury --amount-sat 200000"}]
    refill = policy.status({"default": 20_000, "treasury": 980_000})["proposals"]
    assert [(p["action"], p["withdrawal"]) for p in refill] == [
        ("refill", {"wallet": "treasury", "to_wallet": "default", "amount_sat": 80_000})]
    assert policy.status({"default": 100_500, "treasury": 899_500})["proposals"] == []   # within MIN_MOVE_SAT
    assert CustodyPolicy.parse("hot=default:5,warm=t").status({"default": 9})["proposals"] == []   # no targets


@functools.cache
def _signed_by_each() -> tuple[str, tuple[str, ...]]:
    import asyncio

    d = MultisigAddressDeriver(two_of_three(), NET)
    unsigned, _ = multisig_psbt(d)
    return unsigned, tuple(asyncio.run(signer(n).sign(unsigned)).psbt for n in range(3))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2), max_size=6))
def test_combining_any_signatures_in_any_order_completes_exactly_with_two_distinct_signers(order: list[int]) -> None:
    unsigned, signed = _signed_by_each()
    psbt = unsigned
    for n in order:
        psbt = combine_psbts(NET, psbt, signed[n])
    status = psbt_status(NET, psbt)
    assert status.signatures == len(set(order))
    assert status.complete == (len(set(order)) >= 2)
    if status.complete:
        finalize_psbt(NET, psbt)


async def test_a_hardware_wallet_of_one_cosigner_signs_its_key_of_a_multisig_input() -> None:
    from kaccy_bitcoin.adapters.hwi.hardware_wallet import HwiHardwareWallet, HwiSigner, WrongDevice
    from tests import fake_hwi_device

    unsigned, _ = multisig_psbt(MultisigAddressDeriver(two_of_three(), NET))
    hwi = HwiSigner(HwiHardwareWallet(NET), NET, "00000000")    # no single-key device configured
    fake_hwi_device.plug_in(WORDS[1])
    try:
        result = await hwi.sign(unsigned)
        assert psbt_status(NET, result.psbt).signatures == 1 and not result.complete
        verify_signatures(NET, result.psbt)
        both = combine_psbts(NET, result.psbt, (await signer(0).sign(unsigned)).psbt)
        assert psbt_status(NET, both).complete
        fake_hwi_device.plug_in("zoo " * 11 + "wrong")              # a device of no cosigner
        with pytest.raises(WrongDevice):
            await hwi.sign(unsigned)
    finally:
        fake_hwi_device.unplug()
