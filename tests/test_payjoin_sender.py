"""The sender's checks of BIP78 on the BIP's own test vector (P2SH-P2WPKH, 2 sat/vB,
maxadditionalfeecontribution 182 sat from output 0), then on that proposal altered in each way a
cheating receiver could: every check refuses with its own code. Also the BIP21 URI and the query."""
from __future__ import annotations

import base64
from collections import OrderedDict
from typing import Callable

import pytest
from bitcointx import ChainParams
from bitcointx.core import CMutableTxOut
from bitcointx.core.key import CPubKey
from bitcointx.core.psbt import PSBT_KeyDerivationInfo
from bitcointx.core.key import BIP32Path

from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.payjoin_sender import (
    ProposalRefused, SenderContext, check_proposal, fill_our_inputs, original_for_receiver)
from kaccy_bitcoin.domain.payjoin_uri import (
    InvalidPaymentUri, RequestParams, endpoint_refusal, parse_payment_uri, receiver_error_reason)
from kaccy_bitcoin.domain.psbt import parse_psbt

NET = Network.MAINNET
# BIP78 "Test vectors": the sender's signed (unfinalized) PSBT, the original, the proposal, and
# the proposal filled with the sender's information.
SIGNED = ("cHNidP8BAHMCAAAAAY8nutGgJdyYGXWiBEb45Hoe9lWGbkxh/6bNiOJdCDuDAAAAAAD+////AtyVuAUAAAAAF6kUHehJ8GnSdBUOOv6ujXLr"
          "WmsJRDCHgIQeAAAAAAAXqRR3QJbbz0hnQ8IvQ0fptGn+votneofTAAAAAAEBIKgb1wUAAAAAF6kU3k4ekGHKWRNbA1rV5tR5kEVDVNCHAQQWABTH"
          "ikVyU1WCjVZYB03VJg1fy2mFMCICAxWawBqg1YdUxLTYt9NJ7R7fzws2K09rVRBnI6KFj4UWRzBEAiB8Q+A6dep+Rz92vhy26lT0AjZn4PRLi8Bf"
          "9qoB/CMk0wIgP/Rj2PWZ3gEjUkTlhDRNAQ0gXwTO7t9n+V14pZ6oljUBIgYDFZrAGqDVh1TEtNi300ntHt/PCzYrT2tVEGcjooWPhRYYSFzWUDEA"
          "AIABAACAAAAAgAEAAAAAAAAAAAEAFgAURvYaK7pzgo7lhbSl/DeUan2MxRQiAgLKC8FYHmmul/HrXLUcMDCjfuRg/dhEkG8CO26cEC6vfBhIXNZQ"
          "MQAAgAEAAIAAAACAAQAAAAEAAAAAAA==")
ORIGINAL = ("cHNidP8BAHMCAAAAAY8nutGgJdyYGXWiBEb45Hoe9lWGbkxh/6bNiOJdCDuDAAAAAAD+////AtyVuAUAAAAAF6kUHehJ8GnSdBUOOv6ujXL"
            "rWmsJRDCHgIQeAAAAAAAXqRR3QJbbz0hnQ8IvQ0fptGn+votneofTAAAAAAEBIKgb1wUAAAAAF6kU3k4ekGHKWRNbA1rV5tR5kEVDVNCHAQcXF"
            "gAUx4pFclNVgo1WWAdN1SYNX8tphTABCGsCRzBEAiB8Q+A6dep+Rz92vhy26lT0AjZn4PRLi8Bf9qoB/CMk0wIgP/Rj2PWZ3gEjUkTlhDRNAQ0"
            "gXwTO7t9n+V14pZ6oljUBIQMVmsAaoNWHVMS02LfTSe0e388LNitPa1UQZyOihY+FFgABABYAFEb2Giu6c4KO5YW0pfw3lGp9jMUUAAA=")
PROPOSAL = ("cHNidP8BAJwCAAAAAo8nutGgJdyYGXWiBEb45Hoe9lWGbkxh/6bNiOJdCDuDAAAAAAD+////jye60aAl3JgZdaIERvjkeh72VYZuTGH/ps2"
            "I4l0IO4MBAAAAAP7///8CJpW4BQAAAAAXqRQd6EnwadJ0FQ46/q6NcutaawlEMIcACT0AAAAAABepFHdAltvPSGdDwi9DR+m0af6+i2d6h9MAAA"
            "AAAQEgqBvXBQAAAAAXqRTeTh6QYcpZE1sDWtXm1HmQRUNU0IcAAQEggIQeAAAAAAAXqRTI8sv5ymFHLIjkZNRrNXSEXZHY1YcBBxcWABRfgGZV5Z"
            "JMkgTC1RvlOU9L+e2iEAEIawJHMEQCIGe7e0DfJaVPRYEKWxddL2Pr0G37BoKz0lyNa02O2/tWAiB7ZVgBoF4s8MHocYWWmo4Q1cyV2wl7MX0azl"
            "qa8NBENAEhAmXWPPW0G3yE3HajBOb7gO7iKzHSmZ0o0w0iONowcV+tAAAA")
FILLED = ("cHNidP8BAJwCAAAAAo8nutGgJdyYGXWiBEb45Hoe9lWGbkxh/6bNiOJdCDuDAAAAAAD+////jye60aAl3JgZdaIERvjkeh72VYZuTGH/ps2I4"
          "l0IO4MBAAAAAP7///8CJpW4BQAAAAAXqRQd6EnwadJ0FQ46/q6NcutaawlEMIcACT0AAAAAABepFHdAltvPSGdDwi9DR+m0af6+i2d6h9MAAAAAAQ"
          "EgqBvXBQAAAAAXqRTeTh6QYcpZE1sDWtXm1HmQRUNU0IcBBBYAFMeKRXJTVYKNVlgHTdUmDV/LaYUwIgYDFZrAGqDVh1TEtNi300ntHt/PCzYrT2t"
          "VEGcjooWPhRYYSFzWUDEAAIABAACAAAAAgAEAAAAAAAAAAAEBIICEHgAAAAAAF6kUyPLL+cphRyyI5GTUazV0hF2R2NWHAQcXFgAUX4BmVeWSTJIE"
          "wtUb5TlPS/ntohABCGsCRzBEAiBnu3tA3yWlT0WBClsXXS9j69Bt+waCs9JcjWtNjtv7VgIge2VYAaBeLPDB6HGFlpqOENXMldsJezF9Gs5amvDQRD"
          "QBIQJl1jz1tBt8hNx2owTm+4Du4isx0pmdKNMNIjjaMHFfrQABABYAFEb2Giu6c4KO5YW0pfw3lGp9jMUUIgICygvBWB5prpfx61y1HDAwo37kYP3Y"
          "RJBvAjtunBAur3wYSFzWUDEAAIABAACAAAAAgAEAAAABAAAAAAA=")
P2SH_P2WPKH_INPUT_VSIZE = 91


def context(max_fee: int = 182, substitution: bool = True, fee_index: int | None = 0) -> SenderContext:
    with ChainParams(NET.chain_params):
        payment = bytes(parse_psbt(NET, ORIGINAL).unsigned_tx.vout[1].scriptPubKey)
    return SenderContext(payment, RequestParams(fee_index, Satoshis(max_fee), FeeRate(2000), substitution),
                         P2SH_P2WPKH_INPUT_VSIZE)


def altered(change: Callable) -> str:  # noqa: ANN001
    with ChainParams(NET.chain_params):
        psbt = parse_psbt(NET, PROPOSAL, relaxed=True)
        tx = psbt.unsigned_tx.to_mutable()
        change(psbt, tx)
        psbt.unsigned_tx = tx.to_immutable()
        return psbt.to_base64()


def test_the_bip78_vector_passes_every_check_and_fills_like_the_bip() -> None:
    checked = check_proposal(NET, ORIGINAL, PROPOSAL, context())
    assert checked.our_inputs == (0,) and checked.receiver_inputs == (1,)
    assert (checked.fee.value, checked.contribution.value) == (514, 182)     # 332 sat before, +182 from output 0
    filled = fill_our_inputs(NET, PROPOSAL, SIGNED, checked.our_inputs)
    with ChainParams(NET.chain_params):
        ours, bips = parse_psbt(NET, filled), parse_psbt(NET, FILLED)
        assert ours.unsigned_tx.serialize() == bips.unsigned_tx.serialize()
        for mine, theirs in zip(ours.inputs, bips.inputs):
            assert (mine.witness_utxo, mine.redeem_script, dict(mine.derivation_map)) == (
                theirs.witness_utxo, theirs.redeem_script, dict(theirs.derivation_map))
            assert (mine.final_script_sig, mine.final_script_witness) == (theirs.final_script_sig,
                                                                           theirs.final_script_witness)


def test_the_original_sent_keeps_its_utxo_and_drops_key_paths() -> None:
    # BIP78's original is the sender's signed PSBT finalized, without key paths
    from kaccy_bitcoin.domain.psbt import finalize_psbt
    sent = original_for_receiver(NET, finalize_psbt(NET, SIGNED)[0])
    with ChainParams(NET.chain_params):
        ours, bips = parse_psbt(NET, sent), parse_psbt(NET, ORIGINAL)
        assert ours.serialize() == bips.serialize()


def _set_version(psbt, tx) -> None:  # noqa: ANN001
    tx.nVersion = 1


def _set_locktime(psbt, tx) -> None:  # noqa: ANN001
    tx.nLockTime = 700_000


def _our_sequence(psbt, tx) -> None:  # noqa: ANN001
    tx.vin[0].nSequence = 0xFFFFFFFD


def _swap_inputs(psbt, tx) -> None:  # noqa: ANN001
    from bitcointx.core import COutPoint
    tx.vin[0].prevout = COutPoint(tx.vin[0].prevout.hash, 7)     # our input replaced by another coin


def _keypath(psbt, tx) -> None:  # noqa: ANN001
    key = CPubKey(bytes.fromhex("03159ac01aa0d58754c4b4d8b7d349ed1edfcf0b362b4f6b55106723a2858f8516"))
    psbt.inputs[0].derivation_map = OrderedDict({key: PSBT_KeyDerivationInfo(b"\x48\x5c\xd6\x50",
                                                                             BIP32Path("m/49'/1'/0'/1/0"))})


def _partial_sig(psbt, tx) -> None:  # noqa: ANN001
    key = CPubKey(bytes.fromhex("03159ac01aa0d58754c4b4d8b7d349ed1edfcf0b362b4f6b55106723a2858f8516"))
    psbt.inputs[0].partial_sigs = OrderedDict({key: bytes(70) + b"\x01"})


def _finalize_ours(psbt, tx) -> None:  # noqa: ANN001
    original = parse_psbt(NET, ORIGINAL)
    psbt.inputs[0].final_script_sig = original.inputs[0].final_script_sig
    psbt.inputs[0].final_script_witness = original.inputs[0].final_script_witness


def _unfinalize_theirs(psbt, tx) -> None:  # noqa: ANN001
    from bitcointx.core.script import CScript, CScriptWitness
    psbt.inputs[1].final_script_sig, psbt.inputs[1].final_script_witness = CScript(), CScriptWitness()


def _their_type(psbt, tx) -> None:  # noqa: ANN001
    # their input now spends a P2WPKH output: another script type than our P2SH-P2WPKH
    from bitcointx.core.script import CScript
    out = psbt.inputs[1].witness_utxo
    psbt.inputs[1].final_script_sig = CScript()
    psbt.inputs[1].set_utxo(CMutableTxOut(out.nValue, CScript(b"\x00\x14" + bytes(20))), tx)


def _their_sequence(psbt, tx) -> None:  # noqa: ANN001
    tx.vin[1].nSequence = 0xFFFFFFFF


def _drop_change(psbt, tx) -> None:  # noqa: ANN001
    del tx.vout[0]
    del psbt.outputs[0]
    psbt.outputs[0].index = 0


def _reduce_payment(psbt, tx) -> None:  # noqa: ANN001
    tx.vout[1].nValue = 1_999_000


def _move_payment(psbt, tx) -> None:  # noqa: ANN001
    from bitcointx.core.script import CScript
    tx.vout[1].scriptPubKey = CScript(b"\xa9\x14" + bytes(20) + b"\x87")


def _take_more_fee(psbt, tx) -> None:  # noqa: ANN001
    tx.vout[0].nValue -= 100


def _lower_fee(psbt, tx) -> None:  # noqa: ANN001
    tx.vout[1].nValue += 200


CHEATS = [
    ("version_changed", _set_version, {}),
    ("locktime_changed", _set_locktime, {}),
    ("sequence_changed", _our_sequence, {}),
    ("input_changed", _swap_inputs, {}),
    ("keypath_added", _keypath, {}),
    ("partial_sig_added", _partial_sig, {}),
    ("sender_input_finalized", _finalize_ours, {}),
    ("receiver_input_not_finalized", _unfinalize_theirs, {}),
    ("receiver_input_script_type", _their_type, {}),
    ("sequence_mixed", _their_sequence, {}),
    ("output_missing", _drop_change, {}),
    ("output_reduced", _reduce_payment, {"substitution": False}),
    ("output_substituted", _move_payment, {"substitution": False}),
    ("fee_contribution_too_high", lambda p, t: None, {"max_fee": 181}),
    ("fee_contribution_not_inputs", _take_more_fee, {"max_fee": 1000}),
    ("fee_decreased", _lower_fee, {"fee_index": None}),
    ("output_reduced", lambda p, t: None, {"fee_index": None}),   # no fee output offered: change may not shrink
]


@pytest.mark.parametrize("reason,cheat,options", CHEATS, ids=[f"{c[0]}-{n}" for n, c in enumerate(CHEATS)])
def test_each_cheat_is_refused_with_its_reason(reason, cheat, options) -> None:  # noqa: ANN001
    with pytest.raises(ProposalRefused) as refused:
        check_proposal(NET, ORIGINAL, altered(cheat), context(**options))
    assert refused.value.reason == reason, str(refused.value)


def _truncated_script_sig(psbt, tx) -> None:  # noqa: ANN001
    from bitcointx.core.script import CScript
    psbt.inputs[1].final_script_sig = CScript(b"\x16\x00\x14")      # a push of 22 bytes, 2 given


def _raise_our_change(psbt, tx) -> None:  # noqa: ANN001
    tx.vout[0].nValue += 1000       # our change: more than the original's (a negative contribution)
    tx.vout[1].nValue -= 1000       # the receiver's own output pays for it


def _witness_without_script_sig() -> str:
    """The receiver's P2SH-P2WPKH input with its final witness but no final scriptSig (python-
    bitcointx will not write that: the key-value pair is cut out of the bytes)."""
    raw = base64.b64decode(PROPOSAL)
    script_sig = bytes.fromhex("010717160014") + bytes.fromhex("5f806655e5924c9204c2d51be5394f4bf9eda210")
    assert raw.count(script_sig) == 1
    return base64.b64encode(raw.replace(script_sig, b"")).decode()


@pytest.mark.parametrize("proposal", [lambda: altered(_truncated_script_sig), lambda: altered(_raise_our_change),
                                      _witness_without_script_sig], ids=["truncated", "change_raised", "no_script_sig"])
def test_a_malformed_proposal_is_refused_not_a_crash(proposal) -> None:  # noqa: ANN001
    """A receiver is a stranger: whatever it answers, the sender refuses it with a reason (and
    broadcasts the original), never an exception that leaves the withdrawal unsent."""
    with pytest.raises(ProposalRefused) as refused:
        check_proposal(NET, ORIGINAL, proposal(), context())
    assert refused.value.reason == "invalid_proposal", str(refused.value)


def test_the_receiver_may_put_its_input_first() -> None:
    def first(psbt, tx) -> None:  # noqa: ANN001
        tx.vin[0], tx.vin[1] = tx.vin[1], tx.vin[0]
        psbt.inputs[0], psbt.inputs[1] = psbt.inputs[1], psbt.inputs[0]
    assert check_proposal(NET, ORIGINAL, altered(first), context()).our_inputs == (1,)


def test_substitution_allowed_lets_the_receiver_move_and_lower_its_own_output() -> None:
    check_proposal(NET, ORIGINAL, altered(_move_payment), context(substitution=True))
    check_proposal(NET, ORIGINAL, altered(_reduce_payment), context(substitution=True))


def test_a_proposal_that_is_no_psbt_is_refused() -> None:
    with pytest.raises(ProposalRefused) as refused:
        check_proposal(NET, ORIGINAL, "bm90IGEgcHNidA==", context())
    assert refused.value.reason == "invalid_proposal"


def test_uri_parsing() -> None:
    address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    uri = parse_payment_uri(f"bitcoin:{address.upper()}?amount=0.0015&pj=https%3A%2F%2Fexample.com%2Fpj%3Fa%3D1&pjos=0",
                            Network.REGTEST)
    assert (uri.address.value, uri.amount.value, uri.endpoint, uri.output_substitution) == (
        address, 150_000, "https://example.com/pj?a=1", False)
    plain = parse_payment_uri(f"BITCOIN:{address}?amount=1&label=x", Network.REGTEST)
    assert (plain.endpoint, plain.output_substitution, plain.amount.value) == (None, True, 100_000_000)
    for bad in (f"bitcoin:{address}", f"bitcoin:{address}?amount=0.000000001", f"bitcoin:{address}?amount=1&req-x=1",
                "bitcoin:?amount=1", f"litecoin:{address}?amount=1", f"bitcoin:{address}?amount=1&pjos=2"):
        with pytest.raises(InvalidPaymentUri):
            parse_payment_uri(bad, Network.REGTEST)


def test_endpoint_rules_and_query() -> None:
    assert endpoint_refusal("https://shop.example/pj", Network.MAINNET) is None
    assert endpoint_refusal("http://abc.onion/pj", Network.MAINNET) is None
    assert endpoint_refusal("http://127.0.0.1:8080/pj", Network.MAINNET) is None
    assert endpoint_refusal("http://shop.example/pj", Network.MAINNET) == "insecure_endpoint"
    assert endpoint_refusal("http://shop.example/pj", Network.REGTEST) is None
    assert endpoint_refusal("ftp://shop.example/pj", Network.REGTEST) == "invalid_endpoint"
    params = RequestParams(1, Satoshis(141), FeeRate(2500), False)
    assert params.url("https://s.example/pj/tok?x=1") == (
        "https://s.example/pj/tok?x=1&v=1&additionalfeeoutputindex=1&maxadditionalfeecontribution=141"
        "&minfeerate=2.5&disableoutputsubstitution=true")
    assert RequestParams(None, Satoshis(0), FeeRate(3000), True).url("https://s.example/pj") == (
        "https://s.example/pj?v=1&minfeerate=3")
    assert receiver_error_reason("unavailable") == "receiver_error:unavailable"
    assert receiver_error_reason("<script>click here</script>") == "receiver_error:other"
