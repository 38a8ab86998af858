"""RSK encodings against published vectors.

- Peg-in v1 payload: RSKIP170's example output (github.com/rsksmart/RSKIPs IPs/RSKIP170.md).
- Bridge event topics: keccak of rskj's BridgeEvents signatures (co/rsk/peg/BridgeEvents.java @ d987a4c),
  equal to the topic constants published in RSK's 2wp-api and bridge-transaction-parser sources
  (pegin_btc 0x44cdc782…, rejected_pegin 0x708ce1ea…, unrefundable_pegin 0x35be155c…,
  release_request_received 0x1a4457a4…, release_request_rejected 0xb607c3e1…, batch_pegout_created
  0x483d0191…, pegout_confirmed 0xc287f602…).
- A real testnet release_request_received receipt log (tx 0xc2bde392…, block 6033160) recorded in
  rsksmart/rsk-bridge-transaction-parser's tool/bridge-transaction-decoder.js, with its decoded answer.
- EIP-155's own example transaction (nonce 9, 20 gwei, key 0x46…46, chain id 1).
"""
from __future__ import annotations

import pytest
from eth_utils import keccak

from kaccy_bitcoin.domain import rsk
from kaccy_bitcoin.domain.bitcoin import Address, Network

RSKIP170_PAYLOAD = "52534b54010e537aad84447a2c2a7590d5f2665ef5cf9b667a014f4c767a2d308eebb3f0f1247f9163c896e0b7d2"
# RSKIP170 prints this output as `6a2b…`, but 0x2b (43) does not push the 46 payload bytes that follow
# (a typo in the RSKIP); the script is OP_RETURN with a 46-byte push.
RSKIP170_SCRIPT = "6a2e" + RSKIP170_PAYLOAD
PUBLISHED_TOPICS = {
    "pegin_btc": "0x44cdc782a38244afd68336ab92a0b39f864d6c0b2a50fa1da58cafc93cd2ae5a",
    "rejected_pegin": "0x708ce1ead20561c5894a93be3fee64b326b2ad6c198f8253e4bb56f1626053d6",
    "unrefundable_pegin": "0x35be155c87e408cbbcb753dc12f95fc5a242a29460a3d7189e807e63d7c185a7",
    "release_request_received": "0x1a4457a4460d48b40c5280955faf8e4685fa73f0866f7d8f573bdd8e64aca5b1",
    "release_request_rejected": "0xb607c3e1fbe6b38cd145b15b837f7b722b199caa60e3057b36c141adee3b75e7",
    "batch_pegout_created": "0x483d0191cc4e784b04a41f6c4801a0766b43b1fdd0b9e3e6bfdca74e5b05c2eb",
    "pegout_confirmed": "0xc287f602476eeef8a547a3b82e79045c827c51362ff153f728b6d839bad099ef",
}
RELEASE_LOG_DATA = (
    "0x0000000000000000000000000000000000000000000000000000000000000040000000000000000000000000000000000000000000"
    "000000000000000007a12000000000000000000000000000000000000000000000000000000000000000226d79466e6f587862363776"
    "3169504e64464674714378745143547a344b6b62713256000000000000000000000000000000000000000000000000000000000000")
RELEASE_LOG_TOPICS = ["0x1a4457a4460d48b40c5280955faf8e4685fa73f0866f7d8f573bdd8e64aca5b1",
                      "0x000000000000000000000000b9acf09d4760db501ce546f3e604452303479621"]
EIP155_SIGNED = ("f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd9"
                 "39bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc6421"
                 "4b297fb1966a3b6d83")


def _p2pkh(hash160: str, network: Network) -> Address:
    from bitcointx import ChainParams
    from bitcointx.wallet import P2PKHCoinAddress

    with ChainParams(network.chain_params):
        return Address(str(P2PKHCoinAddress.from_bytes(bytes.fromhex(hash160))), network)


def test_units_are_integers_and_refuse_fractions() -> None:
    assert rsk.sat_to_wei(1) == 10**10 and rsk.sat_to_wei(0) == 0
    assert rsk.wei_to_sat(5 * 10**15) == 500_000
    assert rsk.wei_to_sat_floor(10**10 + 7) == (1, 7)
    for bad in (10**10 + 1, 1, -10**10, 1.0, True, "10000000000"):
        with pytest.raises(rsk.InvalidRskData):
            rsk.wei_to_sat(bad)
    for bad in (-1, 0.5, True, None):
        with pytest.raises(rsk.InvalidRskData):
            rsk.sat_to_wei(bad)


def test_pegin_payload_is_rskip170s_example() -> None:
    refund = _p2pkh("4f4c767a2d308eebb3f0f1247f9163c896e0b7d2", Network.TESTNET)
    rsk_address = "0x0E537aAd84447A2C2A7590D5f2665eF5Cf9b667A"
    assert rsk.pegin_payload(rsk_address, refund).hex() == RSKIP170_PAYLOAD
    assert rsk.pegin_script(rsk_address, refund).hex() == RSKIP170_SCRIPT
    parsed = rsk.parse_pegin_payload(bytes.fromhex(RSKIP170_PAYLOAD))
    assert parsed == rsk.PeginPayload("0x0e537aad84447a2c2a7590d5f2665ef5cf9b667a", 1,
                                      bytes.fromhex("4f4c767a2d308eebb3f0f1247f9163c896e0b7d2"))
    assert rsk.pegin_payload(rsk_address).hex() == RSKIP170_PAYLOAD[:50]


def test_pegin_refund_types() -> None:
    p2sh = Address("2N8EgwcZq89akxb6mCTTKiHLVeXRpxjuy98", Network.TESTNET)
    payload = rsk.pegin_payload("0x" + "11" * 20, p2sh)
    assert payload[25] == rsk.REFUND_P2SH and payload[26:] == p2sh.script_pubkey()[2:22]
    with pytest.raises(rsk.InvalidRskData):
        rsk.pegin_payload("0x" + "11" * 20, Address("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", Network.TESTNET))
    for bad in ("", "52534b5402" + "00" * 20, RSKIP170_PAYLOAD[:-2], RSKIP170_PAYLOAD[:50] + "03" + "00" * 20):
        with pytest.raises(rsk.InvalidRskData):
            rsk.parse_pegin_payload(bytes.fromhex(bad))
    for bad in ("0x123", "0x" + "g" * 40, "11" * 20):
        with pytest.raises(rsk.InvalidRskData):
            rsk.normalize_address(bad)


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOPICS))
def test_bridge_event_topics(name: str) -> None:
    assert rsk.event_topic(name) == PUBLISHED_TOPICS[name]


def test_decode_a_real_release_request_received_log() -> None:
    log = rsk.decode_log(RELEASE_LOG_TOPICS, RELEASE_LOG_DATA)
    assert log == rsk.BridgeLog("release_request_received", {
        "sender": "0xb9acf09d4760db501ce546f3e604452303479621",
        "btcDestinationAddress": "myFnoXxb67v1iPNdFFtqCxtQCTz4Kkbq2V", "amount": 500_000})
    assert log.args == {"sender": "0xb9acf09d4760db501ce546f3e604452303479621",
                        "btcDestinationAddress": "myFnoXxb67v1iPNdFFtqCxtQCTz4Kkbq2V", "amount": 500_000}
    assert rsk.decode_log(["0x" + "00" * 32], "0x") is None
    with pytest.raises(rsk.InvalidRskData):
        rsk.decode_log(RELEASE_LOG_TOPICS, "0x1234")
    with pytest.raises(rsk.InvalidRskData):
        rsk.decode_log(RELEASE_LOG_TOPICS[:1], RELEASE_LOG_DATA)


def test_decode_pegin_and_rejection_logs() -> None:
    from eth_abi import encode

    txid = bytes.fromhex("cfda821cc08c4b392991fead5661fa59a5cc68e2995e3ad668931d92c0b48787")
    receiver = "0x307666818840f76513554b50d2d323631b9affbf"
    log = rsk.decode_log([PUBLISHED_TOPICS["pegin_btc"], "0x" + receiver[2:].rjust(64, "0"), "0x" + txid.hex()],
                         "0x" + encode(["int256", "int256"], [500_000, 1]).hex())
    assert log.args == {"receiver": receiver, "btcTxHash": txid.hex(), "amount": 500_000, "protocolVersion": 1}
    rejected = rsk.decode_log([PUBLISHED_TOPICS["release_request_rejected"], "0x" + receiver[2:].rjust(64, "0")],
                              "0x" + encode(["uint256", "int256"], [1000, 1]).hex())
    assert rejected.args["reason"] == 1 and rsk.REJECTED_PEGOUT_REASONS[1] == "low_amount"


def test_bridge_calls() -> None:
    assert rsk.encode_call("getFederationAddress") == "0x" + keccak(text="getFederationAddress()")[:4].hex()
    assert rsk.encode_call("getMinimumLockTxValue") == "0x" + keccak(text="getMinimumLockTxValue()")[:4].hex()
    txid = "cfda821cc08c4b392991fead5661fa59a5cc68e2995e3ad668931d92c0b48787"
    data = rsk.encode_call("getBtcTxHashProcessedHeight", txid)
    assert data[:10] == "0x" + keccak(text="getBtcTxHashProcessedHeight(string)")[:4].hex()
    assert data[10:] == ("20".rjust(64, "0") + "40".rjust(64, "0") + txid.encode().hex().ljust(128, "0"))
    from eth_abi import encode

    assert rsk.decode_result("getBtcTxHashProcessedHeight", "0x" + encode(["int64"], [-1]).hex()) == -1
    assert rsk.decode_result("getMinimumLockTxValue", "0x" + encode(["int256"], [500_000]).hex()) == 500_000
    fed = "2N5muMepJizJE1gR7FbHJU6CD18V3BpNF9p"
    assert rsk.decode_result("getFederationAddress", "0x" + encode(["string"], [fed]).hex()) == fed
    for garbage in ("0x", "0x12", "not hex"):
        with pytest.raises(rsk.InvalidRskData):
            rsk.decode_result("getMinimumLockTxValue", garbage)


def test_eip155_example_transaction() -> None:
    raw, txhash = rsk.sign_legacy_transaction(bytes.fromhex("46" * 32), nonce=9, gas_price=20 * 10**9, gas=21_000,
                                              to="0x" + "35" * 20, value=10**18, chain_id=1)
    assert raw.hex() == EIP155_SIGNED
    assert txhash == "0x" + keccak(raw).hex()
    # The example's sender, and the same account from the key by coincurve + keccak (not eth-account).
    from coincurve import PrivateKey

    sender = "0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f"
    assert rsk.recover_sender(raw) == sender
    assert rsk.address_of_public_key(PrivateKey(bytes.fromhex("46" * 32)).public_key.format()) == sender
    assert rsk.address_of_public_key(PrivateKey(bytes.fromhex("46" * 32)).public_key.format(False)) == sender


def test_rsk_chain_id_is_signed_in() -> None:
    raw, _ = rsk.sign_legacy_transaction(bytes.fromhex("46" * 32), nonce=0, gas_price=60_000_000, gas=rsk.PEGOUT_GAS,
                                         to=rsk.BRIDGE_ADDRESS, value=rsk.sat_to_wei(400_000), chain_id=33)
    import rlp

    fields = rlp.decode(raw)
    assert int.from_bytes(fields[6], "big") in (33 * 2 + 35, 33 * 2 + 36)
    assert fields[3] == bytes.fromhex(rsk.BRIDGE_ADDRESS[2:])
    with pytest.raises(rsk.InvalidRskData):
        rsk.recover_sender(b"\x01\x02")


def test_pegout_destination_is_the_senders_legacy_address() -> None:
    from coincurve import PrivateKey

    from kaccy_bitcoin.domain.l2_accounts import legacy_btc_address

    secret = bytes.fromhex("46" * 32)
    raw, _ = rsk.sign_legacy_transaction(secret, nonce=3, gas_price=60_000_000, gas=rsk.PEGOUT_GAS,
                                         to=rsk.BRIDGE_ADDRESS, value=rsk.sat_to_wei(300_000), chain_id=33)
    key = rsk.recover_sender_public_key(raw)
    assert key == PrivateKey(secret).public_key.format(compressed=True)
    assert rsk.address_of_public_key(key) == rsk.recover_sender(raw)
    assert legacy_btc_address(key, Network.REGTEST).startswith(("m", "n"))
    assert rsk.recover_sender_public_key(bytes.fromhex(EIP155_SIGNED)) == PrivateKey(secret).public_key.format()
    with pytest.raises(rsk.InvalidRskData):
        rsk.recover_sender_public_key(b"\xc0")


def test_units_roundtrip() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.integers(0, 21_000_000 * 10**8))
    def roundtrip(sats: int) -> None:
        assert rsk.wei_to_sat(rsk.sat_to_wei(sats)) == sats
        assert rsk.wei_to_sat_floor(rsk.sat_to_wei(sats) + 1) == (sats, 1)

    roundtrip()
