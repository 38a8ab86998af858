"""c32check, Clarity values and Stacks transactions against the published vectors.

tests/vectors/c32check.json: the c32check reference implementation's unit-test tables
(github.com/stacks-network/c32check tests/unitTests/src/index.ts); the Clarity hex vectors are
stacks.js's `Serialization Test Vectors` (packages/transactions/tests/clarity.test.ts);
tests/vectors/stacks_transactions.json: signed transactions of stacks.js's builder tests
(packages/transactions/tests/builder.test.ts) with the private keys that signed them.
"""
from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kaccy_bitcoin.domain import stacks_codec as c
from kaccy_bitcoin.domain import stacks_tx as t

VECTORS = pathlib.Path(__file__).parent / "vectors"
C32 = json.loads((VECTORS / "c32check.json").read_text())
TXS = json.loads((VECTORS / "stacks_transactions.json").read_text())["vectors"]


def _bytes(h: str) -> bytes:
    return bytes.fromhex(h if len(h) % 2 == 0 else "0" + h)


@pytest.mark.parametrize("i", range(len(C32["c32encode"]["hex"])))
def test_c32_encode_decode_vectors(i: int) -> None:
    data, min_length, text = (C32["c32encode"][k][i] for k in ("hex", "min_length", "c32"))
    encoded = c.c32_encode(_bytes(data))
    assert (encoded.rjust(min_length, "0") if min_length else encoded) == text
    if not min_length:
        assert c.c32_decode(text) == _bytes(data)


def test_c32check_vectors_and_homoglyphs() -> None:
    table = C32["c32check"]
    for j, version in enumerate(table["versions"]):
        for i, data in enumerate(table["hex"]):
            expected = table["c32"][j][i]
            assert c.c32check_encode(version, _bytes(data)) == expected
            for variant in (expected, expected.lower(), expected.replace("0", "O"), expected.replace("1", "I"),
                            expected.replace("1", "l"), expected.replace("1", "L"), expected.replace("0", "o")):
                assert c.c32check_decode(variant) == (version, _bytes(data))


def test_c32_address_vectors() -> None:
    table = C32["address"]
    for j, version in enumerate(table["versions"]):
        for i, data in enumerate(table["hex"]):
            address = table["addresses"][j][i]
            assert c.c32_address(version, bytes.fromhex(data)) == address
            assert c.c32_address_decode(address) == (version, bytes.fromhex(data))
            assert c.StandardPrincipal.from_address(address).address == address


@pytest.mark.parametrize("bad", ["ST2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKQYAC0RQ0", "ST2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKQYAC0RR",
                                 "ST2J6ZY48GV1EZ5V2V5RB9MP66SW86PYKKQYAC0R", "ST2J",
                                 "bP2CT665Q0JB7P39TZ7BST0QYCAQSMJWBZK8QT35J", "SPU"])
def test_invalid_addresses_are_refused(bad: str) -> None:
    with pytest.raises(c.InvalidStacksEncoding):
        c.c32_address_decode(bad)


def test_invalid_c32check_inputs() -> None:
    for bad in ("Wtz", "sn1g96reo5bq9f5n5famjwsgg3hegs6uuia5jq19", "sia5jq18"):
        with pytest.raises(c.InvalidStacksEncoding):
            c.c32check_decode(bad)
    for version in (32, -1, 100):
        with pytest.raises(c.InvalidStacksEncoding):
            c.c32check_encode(version, b"\xab\xcd\xef")
    with pytest.raises(c.InvalidStacksEncoding):
        c.c32_address(5, bytes(19))


@given(st.binary(max_size=64))
def test_c32_roundtrip(data: bytes) -> None:
    assert c.c32_decode(c.c32_encode(data)) == data


ISSUER = c.StandardPrincipal(0, bytes.fromhex("11deadbeef11ababffff11deadbeef11ababffff"))
CLARITY_VECTORS = [
    (c.Int(1), "0000000000000000000000000000000001"),
    (c.Int(-1), "00ffffffffffffffffffffffffffffffff"),
    (c.UInt(1), "0100000000000000000000000000000001"),
    (c.UInt(10), "010000000000000000000000000000000a"),
    (c.UInt(2**128 - 1), "01ffffffffffffffffffffffffffffffff"),
    (c.Int(2**127 - 1), "007fffffffffffffffffffffffffffffff"),
    (c.Int(-2**127), "0080000000000000000000000000000000"),
    (c.Buffer(bytes.fromhex("deadbeef")), "0200000004deadbeef"),
    (c.Bool(True), "03"),
    (c.Bool(False), "04"),
    (ISSUER, "050011deadbeef11ababffff11deadbeef11ababffff"),
    (c.ContractPrincipal(ISSUER, "abcd"), "060011deadbeef11ababffff11deadbeef11ababffff0461626364"),
    (c.Ok(c.Int(-1)), "0700ffffffffffffffffffffffffffffffff"),
    (c.Err(c.Int(-1)), "0800ffffffffffffffffffffffffffffffff"),
    (c.NONE, "09"),
    (c.Some(c.Int(-1)), "0a00ffffffffffffffffffffffffffffffff"),
    (c.ListCV([c.Int(1), c.Int(2), c.Int(3), c.Int(-4)]),
     "0b000000040000000000000000000000000000000001000000000000000000000000000000000200000000000000000000000000"
     "0000000300fffffffffffffffffffffffffffffffc"),
    (c.Tuple({"foobar": c.Bool(True), "baz": c.NONE}), "0c000000020362617a0906666f6f62617203"),
    (c.StringAscii("hello world"), "0d0000000b68656c6c6f20776f726c64"),
    (c.StringUtf8("hello world"), "0e0000000b68656c6c6f20776f726c64"),
]


@pytest.mark.parametrize("value,expected", CLARITY_VECTORS)
def test_clarity_vectors(value: c.ClarityValue, expected: str) -> None:
    assert c.serialize(value).hex() == expected
    assert c.deserialize(bytes.fromhex(expected)) == value
    assert c.deserialize("0x" + expected) == value


@pytest.mark.parametrize("bad", ["", "ff", "0100", "02000000ffdead", "0d00000001ff", "0e00000001ff", "03ff",
                                 "0c000000010362617a", "06" + "00" * 21 + "05" + "2d2d2d2d2d"])
def test_clarity_garbage_is_a_typed_error(bad: str) -> None:
    with pytest.raises(c.InvalidStacksEncoding):
        c.deserialize(bytes.fromhex(bad))


def test_clarity_values_refuse_nonsense() -> None:
    for make in (lambda: c.UInt(-1), lambda: c.UInt(2**128), lambda: c.Int(2**127), lambda: c.UInt(True),
                 lambda: c.StringAscii("é"), lambda: c.ContractPrincipal(ISSUER, "1bad"),
                 lambda: c.Tuple({"": c.NONE})):
        with pytest.raises(c.InvalidStacksEncoding):
            make()


clarity_values = st.recursive(
    st.one_of(st.integers(-2**127, 2**127 - 1).map(c.Int), st.integers(0, 2**128 - 1).map(c.UInt),
              st.binary(max_size=40).map(c.Buffer), st.booleans().map(c.Bool), st.just(c.NONE),
              st.text(alphabet=st.characters(max_codepoint=127), max_size=20).map(c.StringAscii),
              st.text(max_size=10).map(c.StringUtf8)),
    lambda inner: st.one_of(inner.map(c.Ok), inner.map(c.Err), inner.map(c.Some),
                            st.lists(inner, max_size=3).map(c.ListCV),
                            st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), inner,
                                            max_size=3).map(c.Tuple)),
    max_leaves=8)


@given(clarity_values)
def test_clarity_roundtrip(value: c.ClarityValue) -> None:
    assert c.deserialize(c.serialize(value)) == value


@pytest.mark.parametrize("vector", TXS, ids=[v["name"] for v in TXS])
def test_transaction_vectors(vector: dict) -> None:
    raw = bytes.fromhex(vector["hex"])
    tx = t.deserialize_transaction(raw)
    assert tx.to_bytes() == raw
    assert tx.verify()
    # Signing the same transaction with the published key gives the published bytes (RFC 6979).
    assert tx.sign(bytes.fromhex(vector["sender_key"])).to_bytes() == raw
    tampered = t.StacksTransaction(tx.version, tx.chain_id, t.SingleSigCondition(
        tx.condition.signer, tx.condition.nonce + 1, tx.condition.fee, tx.condition.signature), tx.payload,
        tx.post_conditions, tx.post_condition_mode, tx.anchor_mode)
    assert not tampered.verify()


def test_contract_call_with_post_conditions_decodes_to_its_parts() -> None:
    tx = t.deserialize_transaction(bytes.fromhex(TXS[2]["hex"]))
    assert (tx.version, tx.chain_id, tx.anchor_mode, tx.post_condition_mode) == (
        t.TESTNET_VERSION, t.TESTNET_CHAIN_ID, t.ANCHOR_ANY, t.POST_CONDITION_DENY)
    assert str(tx.payload.contract) == "ST3KC0MTNW34S1ZXD36JYKFD3JJMWA01M55DSJ4JE.kv-store"
    assert tx.payload.function == "get-value" and tx.payload.args == (c.Buffer(b"foo"),)
    ft = tx.post_conditions[2]
    assert isinstance(ft, t.FungiblePostCondition)
    assert ft.principal.address == "ST1EXHZSN8MJSJ9DSG994G1V8CNKYXGMK7Z4SA6DH"
    assert (str(ft.asset.contract), ft.asset.asset_name, ft.condition, ft.amount) == (
        "ST34RKEJKQES7MXQFBT29KSJZD73QK3YNT5N56C6X.test-asset-contract", "test-asset-name", t.LT, 1000)
    nft = tx.post_conditions[5]
    assert isinstance(nft, t.NonFungiblePostCondition) and nft.condition == t.SENT
    assert nft.asset_id == c.Buffer(b"token-asset-name")


def test_building_the_contract_call_from_parts_gives_the_vector() -> None:
    key = bytes.fromhex(TXS[1]["sender_key"])
    from coincurve import PrivateKey

    signer = c.hash160(PrivateKey(key).public_key.format(compressed=True))
    tx = t.StacksTransaction(t.TESTNET_VERSION, t.TESTNET_CHAIN_ID, t.SingleSigCondition(signer, nonce=1, fee=0),
                             t.ContractCall(c.ContractPrincipal.parse(
                                 "ST3KC0MTNW34S1ZXD36JYKFD3JJMWA01M55DSJ4JE.kv-store"), "get-value",
                                 [c.Buffer(b"foo")]))
    signed = tx.sign(key)
    assert signed.to_bytes().hex() == TXS[1]["hex"]
    assert signed.txid == t.sha512_256(bytes.fromhex(TXS[1]["hex"])).hex()
    with pytest.raises(c.InvalidStacksEncoding):
        tx.sign(bytes.fromhex(TXS[0]["sender_key"]))   # not the signer's key


@pytest.mark.parametrize("bad", ["", "00", TXS[1]["hex"] + "00", TXS[1]["hex"][:-2], "05" + TXS[1]["hex"][2:]])
def test_transaction_garbage_is_a_typed_error(bad: str) -> None:
    with pytest.raises(c.InvalidStacksEncoding):
        t.deserialize_transaction(bytes.fromhex(bad))


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.lists(clarity_values, max_size=3),
       st.integers(0, 2**64 - 1), st.sampled_from([t.EQ, t.GT, t.GTE, t.LT, t.LTE]), st.booleans())
def test_transaction_roundtrip_and_signature(nonce: int, fee: int, args: list, amount: int, code: int,
                                             mainnet: bool) -> None:
    from coincurve import PrivateKey

    key = bytes.fromhex(TXS[1]["sender_key"])
    signer = c.hash160(PrivateKey(key).public_key.format(compressed=True))
    contract = c.ContractPrincipal.parse("ST3KC0MTNW34S1ZXD36JYKFD3JJMWA01M55DSJ4JE.kv-store")
    pc = t.FungiblePostCondition(None, t.AssetInfo.parse(f"{contract}::token"), code, amount)
    version, chain_id = t.network_params(mainnet)
    tx = t.StacksTransaction(version, chain_id, t.SingleSigCondition(signer, nonce, fee),
                             t.ContractCall(contract, "get-value", args), [pc]).sign(key)
    back = t.deserialize_transaction(tx.to_bytes())
    assert back == tx and back.verify()
