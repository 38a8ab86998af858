"""The HTLC template byte for byte, its parsing, claim and refund transactions verified by
python-bitcointx's script interpreter, and the swap record's moves under hypothesis."""
from __future__ import annotations

import datetime as dt
import os

import pytest
from bitcointx.core import CTransaction
from bitcointx.core.key import CKey
from bitcointx.core.script import CScript
from bitcointx.core.scripteval import (
    SCRIPT_VERIFY_P2SH,
    SCRIPT_VERIFY_WITNESS,
    EvalScriptError,
    VerifyScript,
    VerifyScriptError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from kaccy_bitcoin.domain.bitcoin import Network, OutPoint, Txid
from kaccy_bitcoin.domain.errors import CounterScriptMismatch, IllegalTransition, NotCancellable
from kaccy_bitcoin.domain.htlc import Htlc, parse_htlc, preimage_from, sha256, spend_htlc
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.swap_state import SwapMachine, SwapState
from kaccy_bitcoin.domain.swaps import INITIATOR, PARTICIPANT, Swap

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# python-bitcointx's interpreter does not run OP_CHECKLOCKTIMEVERIFY: the regtest tests have the node judge it.
FLAGS = {SCRIPT_VERIFY_P2SH, SCRIPT_VERIFY_WITNESS}


def test_template_bytes_for_fixed_inputs() -> None:
    htlc = Htlc(bytes([0x11]) * 32, bytes([0x22]) * 20, bytes([0x33]) * 20, 500)
    assert bytes(htlc.script).hex() == (
        "63" "a8" "20" + "11" * 32 + "88" "76" "a9" "14" + "22" * 20
        + "67" "02f401" "b1" "75" "76" "a9" "14" + "33" * 20 + "68" "88" "ac")
    assert htlc.script_pubkey.hex() == "0020" + sha256(bytes(htlc.script)).hex()
    assert htlc.address(Network.REGTEST).startswith("bcrt1q")
    assert parse_htlc(bytes(htlc.script)) == htlc


def test_locktime_is_a_minimal_script_number() -> None:
    assert "03a08601" in bytes(Htlc(bytes(32), bytes(20), bytes(20), 100_000).script).hex()
    script = bytes(Htlc(bytes(32), bytes(20), bytes(20), 500).script).hex()
    padded = bytes.fromhex(script.replace("02f401", "03f40100"))   # the same number, not minimal
    with pytest.raises(CounterScriptMismatch):
        parse_htlc(padded)


@pytest.mark.parametrize("script", ["", "51", "zz", "63a820" + "11" * 32])
def test_other_scripts_are_refused(script: str) -> None:
    with pytest.raises(CounterScriptMismatch):
        parse_htlc(bytes.fromhex(script) if script != "zz" else b"\x4c")


def _key() -> CKey:
    return CKey(os.urandom(32))


def _verify(raw: bytes, htlc: Htlc, amount: int) -> None:
    tx = CTransaction.deserialize(raw)
    VerifyScript(tx.vin[0].scriptSig, CScript(htlc.script_pubkey), tx, 0, FLAGS, amount=amount,
                 witness=tx.wit.vtxinwit[0].scriptWitness)


def test_claim_and_refund_satisfy_the_script() -> None:
    claimer, refunder, preimage = _key(), _key(), os.urandom(32)
    htlc = Htlc.of(sha256(preimage), claimer.pub, refunder.pub, 300)
    where = OutPoint(Txid("ab" * 32), 1)
    pay_to = bytes(CScript([0, bytes(20)]))
    claim, fee = spend_htlc(htlc, where, Satoshis(50_000), pay_to, FeeRate.from_sat_per_vb(2), claimer.pub,
                            claimer.sign, preimage)
    _verify(claim, htlc, 50_000)
    assert CTransaction.deserialize(claim).vout[0].nValue == 50_000 - fee.value
    assert preimage_from(claim, where, htlc) == preimage
    refund, _ = spend_htlc(htlc, where, Satoshis(50_000), pay_to, FeeRate.from_sat_per_vb(2), refunder.pub,
                           refunder.sign)
    _verify(refund, htlc, 50_000)
    tx = CTransaction.deserialize(refund)
    assert tx.nLockTime == 300 and tx.vin[0].nSequence < 0xFFFFFFFF
    assert preimage_from(refund, where, htlc) is None
    wrong, _ = spend_htlc(htlc, where, Satoshis(50_000), pay_to, FeeRate.from_sat_per_vb(2), refunder.pub,
                          refunder.sign, preimage)   # the refunder's key on the claim branch
    with pytest.raises((VerifyScriptError, EvalScriptError)):
        _verify(wrong, htlc, 50_000)


def _swap(role: str) -> Swap:
    return Swap("s1", role, 0, _key().pub, _key().pub, Satoshis(10_000), Satoshis(9_000), "default", AT)


def _fund(swap: Swap) -> list:
    swap.funding_requested("w")
    return swap.funded(OutPoint(Txid("cd" * 32), 0), AT)


FACTS = st.lists(st.sampled_from(["fund", "confirm", "claimed", "redeem", "redeem_ok", "refund", "refund_ok",
                                  "cancel"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(role=st.sampled_from([INITIATOR, PARTICIPANT]), facts=FACTS)
def test_swap_moves_only_along_the_machine(role: str, facts: list[str]) -> None:
    swap, preimage = _swap(role), os.urandom(32)
    swap.set_terms(sha256(preimage), 200)
    seen: list[str] = []
    for fact in facts:
        before = swap.state
        try:
            events = {
                "fund": lambda: _fund(swap),
                "confirm": lambda: swap.lock_confirmed(101, AT),
                "claimed": lambda: swap.preimage_seen(preimage, "ef" * 32, AT) + swap.lock_claimed("ef" * 32, AT),
                "redeem": lambda: swap.redeemed(b"tx", "01" * 32, AT),
                "redeem_ok": lambda: swap.redeem_confirmed_now(AT),
                "refund": lambda: swap.refund_broadcast(b"tx", "02" * 32, AT),
                "refund_ok": lambda: swap.refund_confirmed_now(AT),
                "cancel": lambda: swap.cancel(AT),
            }[fact]()
        except NotCancellable:
            assert swap.funding_withdrawal_id is not None or swap.state is not SwapState.INITIATED
            continue
        assert swap.state is before or swap.state in SwapMachine.allowed(before).values()
        seen.extend(e.id for e in events)
        for e in events:
            assert e.subject == "s1" and e.data["swap_id"] == "s1" and e.data["state"] == swap.state.name
    assert len(seen) == len(set(seen))   # each fact fires once
    assert SwapMachine.replay(swap.machine.history).state is swap.state


def test_terminal_states_absorb() -> None:
    swap = _swap(INITIATOR)
    swap.cancel(AT)
    with pytest.raises(IllegalTransition):
        swap.machine.fire("lock", at=AT)
