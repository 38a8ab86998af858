"""sBTC deposit scripts and withdrawal calls.

Vectors: the deposit script Emily returned for a real testnet deposit, recorded in the `sbtc`
package's tests (github.com/hirosystems/stacks.js packages/sbtc/tests/deposit.test.ts @ 8f7dc65b:
signers' key b6ad…8b74, recipient ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM, max fee 80,000;
reclaim prefix `027017b2` for a lock time of 6000), the NUMS key of BIP341 and sbtc/src/lib.rs.
The P2TR output is checked against a second, independent computation of BIP341 (tagged hashes
with hashlib, the tweak added with coincurve), and the withdrawal recipient against the encoding
of sbtc-withdrawal.clar (version 0x00 P2PKH … 0x06 P2TR).
"""
from __future__ import annotations

import hashlib

import pytest
from coincurve import PublicKey

from kaccy_bitcoin.domain import sbtc
from kaccy_bitcoin.domain import stacks_codec as c
from kaccy_bitcoin.domain.bitcoin import Address, Network
from kaccy_bitcoin.domain.stacks_tx import EQ, FungiblePostCondition

SIGNERS = bytes.fromhex("b6ad657d5428873633f6c3c948b4102bd697c1c8449425c1be1ff71992f98b74")
RECIPIENT = c.StandardPrincipal(26, bytes.fromhex("6d78de7b0625dfbfc16c3a8a5735f6dc3dc3f2ce"))
EMILY_DEPOSIT_SCRIPT = ("1e0000000000013880051a6d78de7b0625dfbfc16c3a8a5735f6dc3dc3f2ce7520"
                        "b6ad657d5428873633f6c3c948b4102bd697c1c8449425c1be1ff71992f98b74ac")
OURS = PublicKey.from_secret(bytes(range(1, 33))).format()


def tagged(tag: str, data: bytes) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + data).digest()


def independent_p2tr(internal: bytes, leaves: list[bytes]) -> bytes:
    hashes = sorted(tagged("TapLeaf", bytes([0xC0, len(s)]) + s) for s in leaves)   # scripts < 253 bytes
    root = tagged("TapBranch", hashes[0] + hashes[1])
    tweak = tagged("TapTweak", internal + root)
    return bytes([0x51, 0x20]) + PublicKey(b"\x02" + internal).add(tweak).format()[1:]


def test_nums_key_is_bip341s() -> None:
    g = PublicKey.from_secret((1).to_bytes(32, "big")).format(compressed=False)
    assert hashlib.sha256(g).digest() == sbtc.NUMS_X_ONLY


def test_deposit_script_is_emilys_vector() -> None:
    assert sbtc.deposit_script(SIGNERS, RECIPIENT, 80_000).hex() == EMILY_DEPOSIT_SCRIPT
    assert RECIPIENT.address == "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"
    assert sbtc.deposit_script(b"\x02" + SIGNERS, RECIPIENT.address, 80_000).hex() == EMILY_DEPOSIT_SCRIPT


def test_deposit_script_to_a_contract_principal() -> None:
    recipient = c.ContractPrincipal(RECIPIENT, "contract-address")
    script = sbtc.deposit_script(SIGNERS, recipient, 15_000)
    data = (15_000).to_bytes(8, "big") + c.serialize(recipient)
    assert script == bytes([len(data)]) + data + b"\x75\x20" + SIGNERS + b"\xac"
    long_name = c.ContractPrincipal(RECIPIENT, "a" * 128)   # 159 bytes of data: OP_PUSHDATA1
    assert sbtc.deposit_script(SIGNERS, long_name, 1)[:2] == bytes([0x4C, 8 + 151])


@pytest.mark.parametrize("lock_time,prefix", [(6000, "027017b2"), (950, "02b603b2"), (16, "60b2"), (1, "51b2"),
                                              (17, "0111b2"), (128, "028000b2"), (65535, "03ffff00b2")])
def test_reclaim_script_minimal_lock_time(lock_time: int, prefix: str) -> None:
    script = sbtc.reclaim_script(OURS, lock_time)
    assert script.hex() == prefix + "7520" + OURS[1:].hex() + "ac"


@pytest.mark.parametrize("bad", [0, -1, 65536, 1 << 22, 1 << 31, True, 1.5])
def test_reclaim_lock_time_out_of_range(bad: object) -> None:
    with pytest.raises(sbtc.InvalidSbtcRequest):
        sbtc.reclaim_script(OURS, bad)


def test_bad_keys_and_fees_are_refused() -> None:
    for key in (b"\x02" * 31, bytes(32), b"\x04" + SIGNERS):
        with pytest.raises(sbtc.InvalidSbtcRequest):
            sbtc.deposit_script(key, RECIPIENT, 1)
    for fee in (-1, 1 << 64, 1.0, True):
        with pytest.raises(sbtc.InvalidSbtcRequest):
            sbtc.deposit_script(SIGNERS, RECIPIENT, fee)


def test_deposit_output_matches_an_independent_bip341_computation() -> None:
    out = sbtc.build_deposit(SIGNERS, RECIPIENT, sbtc.DEFAULT_MAX_SIGNER_FEE, OURS)
    assert out.script_pubkey == independent_p2tr(sbtc.NUMS_X_ONLY, [out.deposit_script, out.reclaim_script])
    # The leaves' order does not matter (TapBranch sorts), as in rust-bitcoin's NodeInfo::combine.
    swapped = sbtc.deposit_output(out.reclaim_script, out.deposit_script)
    assert swapped.script_pubkey == out.script_pubkey
    assert out.address(Network.REGTEST).startswith("bcrt1p")
    assert out.address(Network.MAINNET).startswith("bc1p")
    assert Address(out.address(Network.REGTEST), Network.REGTEST).script_pubkey() == out.script_pubkey


def test_reclaim_leaf_control_block_proves_the_leaf() -> None:
    out = sbtc.build_deposit(SIGNERS, RECIPIENT, 80_000, OURS, lock_time=12)
    script, control = sbtc.reclaim_leaf(out)
    assert script == out.reclaim_script
    assert control[0] & 0xFE == 0xC0 and control[1:33] == sbtc.NUMS_X_ONLY
    sibling = tagged("TapLeaf", bytes([0xC0, len(out.deposit_script)]) + out.deposit_script)
    assert control[33:] == sibling
    parity = control[0] & 1
    q = bytes.fromhex(out.script_pubkey.hex()[4:])
    assert PublicKey(bytes([2 + parity]) + q) == PublicKey(b"\x02" + sbtc.NUMS_X_ONLY).add(
        tagged("TapTweak", sbtc.NUMS_X_ONLY + out.merkle_root))


# Addresses from BIP173/BIP350/BIP341 and well-known examples, with the sbtc-withdrawal recipient.
RECIPIENTS = [
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", 0, "7771a3fd2b7e1bd4b0f4c6fd4e2f5f5e8a7b0d5b"),
    ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", 1, "b472a266d0bd89c13706a4132ccfb16f7c3b9fcb"),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", 4, "751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3", 5,
     "1863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", 6,
     "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
]


@pytest.mark.parametrize("address,version,hashbytes", RECIPIENTS)
def test_withdrawal_recipient(address: str, version: int, hashbytes: str) -> None:
    r = sbtc.withdrawal_recipient(Address(address, Network.MAINNET))
    if version == 0:   # the hash160 is what the address decodes to, whatever the example
        from bitcointx.wallet import CBitcoinAddress
        hashbytes = bytes(CBitcoinAddress(address)).hex()
    assert r == c.Tuple({"version": c.Buffer(bytes([version])), "hashbytes": c.Buffer(bytes.fromhex(hashbytes))})


def test_withdrawal_call_and_post_condition() -> None:
    deployer = "SM3VDXK3WZZSA84XXFKAFAF15NNZX32CTSG82JFQ4"
    to = Address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", Network.REGTEST)
    call = sbtc.withdrawal_call(deployer, 100_000, to, 3_000)
    assert str(call.contract) == deployer + ".sbtc-withdrawal"
    assert call.function == "initiate-withdrawal-request"
    assert call.args[0] == c.UInt(100_000) and call.args[2] == c.UInt(3_000)
    assert c.serialize(call.args[1]).hex() == (
        "0c00000002" + "09686173686279746573" + "0200000014751e76e8199196d454941c45d1b3a323f1433bd6"
        + "0776657273696f6e" + "020000000104")
    pc = sbtc.withdrawal_post_condition(deployer, 100_000, 3_000)
    assert isinstance(pc, FungiblePostCondition) and pc.principal is None
    assert (pc.condition, pc.amount, str(pc.asset.contract), pc.asset.asset_name) == (
        EQ, 103_000, deployer + ".sbtc-token", "sbtc-token")
    for amount in (546, 0, -5, 1.5):
        with pytest.raises(sbtc.InvalidSbtcRequest):
            sbtc.withdrawal_call(deployer, amount, to, 0)


def test_signers_key_from_the_registry_read_only_answer() -> None:
    # The answer recorded in the sbtc package's tests (deposit.test.ts) and the key it yields.
    assert sbtc.signers_key_from_read_only(
        "0x020000002103b6ad657d5428873633f6c3c948b4102bd697c1c8449425c1be1ff71992f98b74") == SIGNERS
    for bad in ("0x0100000000000000000000000000000001", "0x0200000020" + "00" * 32, "0x", "zz"):
        with pytest.raises(c.InvalidStacksEncoding if bad in ("0x", "zz") else sbtc.InvalidSbtcRequest):
            sbtc.signers_key_from_read_only(bad)


def test_withdrawal_transaction_is_signed_and_reads_back() -> None:
    from kaccy_bitcoin.domain import stacks_tx as t

    secret = bytes(range(1, 33))
    deployer = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"
    to = Address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", Network.REGTEST)
    tx = sbtc.withdrawal_transaction(secret, mainnet=False, nonce=7, fee=3_000, deployer=deployer, amount=10_000,
                                     recipient=to, max_fee=2_000)
    back = t.deserialize_transaction(tx.to_bytes())
    assert back == tx and back.verify()
    assert (back.version, back.chain_id, back.anchor_mode, back.post_condition_mode) == (
        t.TESTNET_VERSION, t.TESTNET_CHAIN_ID, t.ANCHOR_ANY, t.POST_CONDITION_DENY)
    assert (back.condition.nonce, back.condition.fee) == (7, 3_000)
    assert back.condition.signer == c.hash160(OURS)
    assert back.post_conditions[0].amount == 12_000
    assert t.network_params(True) == (0x00, 1)
    with pytest.raises(sbtc.InvalidSbtcRequest):
        sbtc.withdrawal_transaction(secret, mainnet=False, nonce=-1, fee=0, deployer=deployer, amount=10_000,
                                    recipient=to, max_fee=0)
