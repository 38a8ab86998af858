"""PayJoin receiver rules (domain/payjoin.py), BIP78's own test vector first."""
from __future__ import annotations

import base64
from fractions import Fraction

import pytest
from bitcointx import ChainParams

from kaccy_bitcoin.domain.bitcoin import DerivationPath, Network, OutPoint, Txid
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.payjoin import (
    OurCoin, PayjoinParams, PayjoinRefused, added_inputs, build_proposal, output_values, read_original)
from kaccy_bitcoin.domain.psbt import P2SH_P2WPKH, P2WPKH, KeyOrigin, parse_psbt

NET = Network.REGTEST
# BIP78 "Test vectors": P2SH-P2WPKH inputs, original at 2 sat/vB, maxadditionalfeecontribution
# 0.00000182, additionalfeeoutputindex 0.
BIP78_ORIGINAL = (
    "cHNidP8BAHMCAAAAAY8nutGgJdyYGXWiBEb45Hoe9lWGbkxh/6bNiOJdCDuDAAAAAAD+////AtyVuAUAAAAAF6kUHehJ8GnSdBUOOv6ujXLrWmsJ"
    "RDCHgIQeAAAAAAAXqRR3QJbbz0hnQ8IvQ0fptGn+votneofTAAAAAAEBIKgb1wUAAAAAF6kU3k4ekGHKWRNbA1rV5tR5kEVDVNCHAQcXFgAUx4pF"
    "clNVgo1WWAdN1SYNX8tphTABCGsCRzBEAiB8Q+A6dep+Rz92vhy26lT0AjZn4PRLi8Bf9qoB/CMk0wIgP/Rj2PWZ3gEjUkTlhDRNAQ0gXwTO7t9n"
    "+V14pZ6oljUBIQMVmsAaoNWHVMS02LfTSe0e388LNitPa1UQZyOihY+FFgABABYAFEb2Giu6c4KO5YW0pfw3lGp9jMUUAAA=")
BIP78_PROPOSAL = (
    "cHNidP8BAJwCAAAAAo8nutGgJdyYGXWiBEb45Hoe9lWGbkxh/6bNiOJdCDuDAAAAAAD+////jye60aAl3JgZdaIERvjkeh72VYZuTGH/ps2I4l0I"
    "O4MBAAAAAP7///8CJpW4BQAAAAAXqRQd6EnwadJ0FQ46/q6NcutaawlEMIcACT0AAAAAABepFHdAltvPSGdDwi9DR+m0af6+i2d6h9MAAAAAAQEg"
    "qBvXBQAAAAAXqRTeTh6QYcpZE1sDWtXm1HmQRUNU0IcAAQEggIQeAAAAAAAXqRTI8sv5ymFHLIjkZNRrNXSEXZHY1YcBBxcWABRfgGZV5ZJMkgTC"
    "1RvlOU9L+e2iEAEIawJHMEQCIGe7e0DfJaVPRYEKWxddL2Pr0G37BoKz0lyNa02O2/tWAiB7ZVgBoF4s8MHocYWWmo4Q1cyV2wl7MX0azlqa8NBE"
    "NAEhAmXWPPW0G3yE3HajBOb7gO7iKzHSmZ0o0w0iONowcV+tAAAA")


def _vector():
    with ChainParams(NET.chain_params):
        original, proposal = parse_psbt(NET, BIP78_ORIGINAL), parse_psbt(NET, BIP78_PROPOSAL)
        payee = bytes(original.unsigned_tx.vout[1].scriptPubKey)
        ours = proposal.inputs[1]
        prev = proposal.unsigned_tx.vin[1].prevout
        coin = OurCoin(OutPoint(Txid(prev.hash[::-1].hex()), prev.n), Satoshis(ours.witness_utxo.nValue),
                       bytes(ours.witness_utxo.scriptPubKey), P2SH_P2WPKH,
                       KeyOrigin("00000000", DerivationPath.parse("m/49'/1'/0'/0/0"),
                                 bytes(ours.final_script_witness.stack[1])))
        unsigned = proposal.unsigned_tx.serialize()
    return payee, coin, unsigned


def test_bip78_vector_original_is_read_as_the_receiver_must():
    payee, _, _ = _vector()
    original = read_original(NET, BIP78_ORIGINAL, payee)
    assert (original.fee, original.vsize, original.kind) == (332, 166, P2SH_P2WPKH)
    assert original.fee_rate == 2
    assert (original.payment_vout, original.payment_sat) == (1, 2_000_000)


def test_bip78_vector_proposal_is_what_we_build():
    """Our coin at the vector's place gives the vector's proposal transaction exactly: the
    sender pays 182 sat (its cap: 2 sat/vB times our 91 vB input), we pay nothing."""
    payee, coin, unsigned = _vector()
    original = read_original(NET, BIP78_ORIGINAL, payee)
    params = PayjoinParams.parse({"v": "1", "additionalfeeoutputindex": "0", "maxadditionalfeecontribution": "182"})
    built = build_proposal(NET, original, coin, params, position=1)
    assert (built.contributed_sat, built.sender_fee_sat, built.our_fee_sat) == (2_000_000, 182, 0)
    with ChainParams(NET.chain_params):
        assert parse_psbt(NET, built.psbt).unsigned_tx.serialize() == unsigned
    assert added_inputs(NET, BIP78_ORIGINAL, BIP78_PROPOSAL) == [1]
    assert output_values(NET, BIP78_PROPOSAL) == [95_983_068 - 182, 4_000_000]


def test_without_a_fee_output_we_pay_for_our_input():
    payee, coin, _ = _vector()
    original = read_original(NET, BIP78_ORIGINAL, payee)
    built = build_proposal(NET, original, coin, PayjoinParams.parse({}), position=0)
    assert (built.sender_fee_sat, built.our_fee_sat, built.contributed_sat) == (0, 182, 2_000_000 - 182)
    assert output_values(NET, built.psbt) == [95_983_068, 2_000_000 + 2_000_000 - 182]


def test_minfeerate_above_the_original_is_kept():
    payee, coin, _ = _vector()
    original = read_original(NET, BIP78_ORIGINAL, payee)
    params = PayjoinParams.parse({"additionalfeeoutputindex": "0", "maxadditionalfeecontribution": "1000",
                                  "minfeerate": "3"})
    built = build_proposal(NET, original, coin, params, position=1)
    assert built.sender_fee_sat == 182                      # never more than BIP78's cap
    assert built.sender_fee_sat + built.our_fee_sat + 332 >= 3 * 257


def test_a_coin_that_cannot_pay_its_fee_is_not_enough_money():
    payee, coin, _ = _vector()
    original = read_original(NET, BIP78_ORIGINAL, payee)
    small = OurCoin(coin.outpoint, Satoshis(150), coin.script_pubkey, coin.kind, coin.origin)
    with pytest.raises(PayjoinRefused) as refused:
        build_proposal(NET, original, small, PayjoinParams(), 0)
    assert refused.value.error_code == "not-enough-money"


def test_other_script_type_is_unavailable():
    payee, coin, _ = _vector()
    original = read_original(NET, BIP78_ORIGINAL, payee)
    with pytest.raises(PayjoinRefused) as refused:
        build_proposal(NET, original, OurCoin(coin.outpoint, coin.amount, coin.script_pubkey, P2WPKH, coin.origin),
                       PayjoinParams(), 0)
    assert refused.value.error_code == "unavailable"


@pytest.mark.parametrize("query, expected", [
    ({}, PayjoinParams()),
    ({"v": "1", "additionalfeeoutputindex": "2", "maxadditionalfeecontribution": "300", "minfeerate": "1.5",
      "disableoutputsubstitution": "true"}, PayjoinParams(2, 300, Fraction(3, 2), False)),
    ({"additionalfeeoutputindex": "1"}, PayjoinParams()),                     # both or neither
    ({"additionalfeeoutputindex": "1", "maxadditionalfeecontribution": "-5"}, PayjoinParams()),
])
def test_query_parameters(query, expected):
    assert PayjoinParams.parse(query) == expected


@pytest.mark.parametrize("text, code", [("Infinity", "original-psbt-rejected"), ("-inf", "original-psbt-rejected"),
                                        ("nan", "original-psbt-rejected"), ("abc", "original-psbt-rejected"),
                                        ("1e999999999", "not-enough-money"), ("1000001", "not-enough-money")])
def test_a_minfeerate_that_is_no_finite_number_is_refused_at_once(text, code):
    """The endpoint has no API key: `1e999999999` must not make the server compute 10**999999999."""
    with pytest.raises(PayjoinRefused) as refused:
        PayjoinParams.parse({"minfeerate": text})
    assert refused.value.error_code == code


def test_minfeerate_is_read_to_the_millisat_per_vbyte():
    assert PayjoinParams.parse({"minfeerate": "1e-999999999"}).min_fee_rate == 0
    assert PayjoinParams.parse({"minfeerate": "2.0004"}).min_fee_rate == Fraction(2001, 1000)
    assert PayjoinParams.parse({"minfeerate": "2.5e1"}).min_fee_rate == 25


def test_an_index_of_other_digits_is_ignored():
    assert PayjoinParams.parse({"additionalfeeoutputindex": "\u00b2", "maxadditionalfeecontribution": "5"}) \
        == PayjoinParams()


@pytest.mark.parametrize("v", ["2", "0", "x"])
def test_other_versions_are_unsupported(v):
    with pytest.raises(PayjoinRefused) as refused:
        PayjoinParams.parse({"v": v})
    assert refused.value.body() == {"errorCode": "version-unsupported", "message": refused.value.args[0],
                                    "supported": [1]}


def test_originals_refused():
    payee, _, _ = _vector()
    for body, why in [("not a psbt", "not a PSBT"), (BIP78_PROPOSAL, "not finalized")]:
        with pytest.raises(PayjoinRefused) as refused:
            read_original(NET, body, payee)
        assert refused.value.error_code == "original-psbt-rejected" and why in str(refused.value)
    with pytest.raises(PayjoinRefused, match="does not pay the order"):
        read_original(NET, BIP78_ORIGINAL, b"\x00\x14" + bytes(20))


@pytest.mark.parametrize("url, network, ok", [
    ("https://pay.example.com/", "mainnet", "https://pay.example.com"),
    ("http://abcdefghij234567.onion", "mainnet", "http://abcdefghij234567.onion"),
    ("http://127.0.0.1:8080", "mainnet", "http://127.0.0.1:8080"),
    ("http://pay.example.com", "regtest", "http://pay.example.com"),
    ("http://pay.example.com", "mainnet", None),
    ("ftp://pay.example.com", "regtest", None),
    ("https://pay.example.com/?x=1", "mainnet", None),
])
def test_payjoin_url_setting(url, network, ok):
    from kaccy_bitcoin.bootstrap.config import ConfigError, load

    env = {"KACCY_PAYJOIN_URL": url, "KACCY_NETWORK": network, "KACCY_DATA_DIR": "/tmp/unused"}
    if ok is None:
        with pytest.raises(ConfigError, match="KACCY_PAYJOIN_URL"):
            load(env)
    else:
        assert load(env)["payjoin_url"] == ok


def test_the_pj_parameter_of_an_order():
    from kaccy_bitcoin.application.payjoin_offers import PayjoinSettings, with_payjoin

    on = PayjoinSettings(NET, "https://pay.example.com:8443")
    assert with_payjoin("bitcoin:bcrt1q?amount=0.1", on, "tok_en-1") == \
        "bitcoin:bcrt1q?amount=0.1&pj=https://pay.example.com:8443/pj/tok_en-1"
    assert with_payjoin("bitcoin:bcrt1q?amount=0.1", PayjoinSettings(NET), "t") == "bitcoin:bcrt1q?amount=0.1"


# The BIP78 proposal with a few bytes of its unsigned transaction mangled (found by fuzzing): the
# transaction reads as segwit-flagged, and python-bitcointx fails with an UnboundLocalError.
BAD_SEGWIT_FLAG = bytes.fromhex(
    "70736274ff01009c9c464802000000028f27bad1a025dc981975a20446f8e47a1ef655866e4c61ffa6cd88e25d083b8300000000"
    "00feffffff8f27bad1a025dc981975a20446f8e47a1ef655866e4c61ffa6cd88e25d083b830100000000feffff000017a9141de8"
    "49f069d274150e3afeae8d72eb8f6b0944308700093d000000000017a914774096dbcf486743c22f4347e9b469febe8b677a87d3"
    "00000000010120a81bd7050000000017a914de4e1e9061ca59135b035ad5e6d47990454354d0870001012080841e000000000017"
    "a914c8f2cbf9ca61472c88e464d46b3574845d91d8d5870107171600145f806655e5924c9204c2d51be5394f4bf9eda21001086b"
    "02473044022067bb7b40df25a54f45810a5b175d2f63ebd06dfb0682b3d25c8d6b4d8edbfb5602207b655801a0c1e87185969a8e"
    "10d5cc95db097b317d1ace5a9af0d0443401210265d63cf5b41b7c84dc76a304e6fb80eee22b31d2999d28d30d2238da30715fad"
    "000000")


def test_a_mangled_transaction_is_rejected_not_a_crash():
    payee, _, _ = _vector()
    with pytest.raises(PayjoinRefused) as refused:
        read_original(NET, base64.b64encode(BAD_SEGWIT_FLAG).decode(), payee)
    assert refused.value.error_code == "original-psbt-rejected"
