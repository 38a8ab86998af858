"""Coin selection properties (hypothesis) and known answers."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaccy_bitcoin.domain.bitcoin import AddressType, OutPoint, Txid
from kaccy_bitcoin.domain.coin_selection import (
    DUST_LIMIT,
    INPUT_WEIGHT,
    OUTPUT_TYPE_WEIGHT,
    OUTPUT_WEIGHT,
    TX_OVERHEAD_WEIGHT,
    Coin,
    SelectionParams,
    overhead_weight,
    select_coins,
    vsize,
)
from kaccy_bitcoin.domain.errors import InsufficientFunds
from kaccy_bitcoin.domain.money import FeeRate, Satoshis

FIXED = TX_OVERHEAD_WEIGHT + OUTPUT_WEIGHT["p2wpkh"]


def coin(n: int, sat: int) -> Coin:
    return Coin(OutPoint(Txid(f"{n:064x}"), 0), Satoshis(sat))


def test_bnb_finds_a_changeless_exact_match() -> None:
    # At the long-term fee rate spending an input now costs what it would later, so the
    # changeless match (waste = 0) beats any selection that pays for a change output.
    params = SelectionParams(FeeRate.from_sat_per_vb(10))
    coins = [coin(i, v) for i, v in enumerate([100_000, 50_000, 30_000, 20_068, 7_000])]
    target = Satoshis(50_000 + 20_068 - 2 * 680 - 10 * vsize(FIXED))
    s = select_coins(coins, target, FIXED, params, random.Random(1))
    assert s.algorithm == "bnb" and s.change == Satoshis(0)
    assert sorted(c.amount.value for c in s.coins) == [20_068, 50_000]


def test_insufficient_funds_says_how_much_is_missing() -> None:
    params = SelectionParams(FeeRate.from_sat_per_vb(2))
    coins = [coin(1, 10_000), coin(2, 5_000)]
    with pytest.raises(InsufficientFunds) as err:
        select_coins(coins, Satoshis(20_000), FIXED, params)
    expected_missing = 20_000 + FeeRate.from_sat_per_vb(2).fee_for(vsize(FIXED)).value - (
        10_000 - 136 + 5_000 - 136)
    assert err.value.missing_sat == expected_missing
    assert f"{expected_missing} sat missing" in str(err.value)


amounts = st.lists(st.integers(min_value=1_000, max_value=5_000_000), min_size=1, max_size=40)
SPEND_TYPES = [AddressType.P2WPKH, AddressType.P2SH, AddressType.P2PKH, AddressType.P2TR]


@settings(max_examples=200, deadline=None)
@given(amounts, st.integers(min_value=1_000, max_value=3_000_000), st.integers(min_value=1_000, max_value=50_000),
       st.integers(0, 2**32), st.sampled_from(SPEND_TYPES))
def test_selection_properties(values: list[int], target: int, rate_kvb: int, seed: int, kind: AddressType) -> None:
    params = SelectionParams.for_type(FeeRate(rate_kvb), kind)
    fixed = overhead_weight(kind) + OUTPUT_WEIGHT["p2wpkh"]
    coins = [Coin(OutPoint(Txid(f"{i:064x}"), 0), Satoshis(v), INPUT_WEIGHT[kind]) for i, v in enumerate(values)]
    try:
        s = select_coins(coins, Satoshis(target), fixed, params, random.Random(seed))
    except InsufficientFunds as err:
        assert err.missing_sat > 0
        return
    outpoints = [c.outpoint for c in s.coins]
    assert len(outpoints) == len(set(outpoints))                          # no coin twice
    assert s.total.value == target + s.fee.value + s.change.value         # inputs = outputs + fee
    weight = fixed + len(s.coins) * INPUT_WEIGHT[kind] + (OUTPUT_TYPE_WEIGHT[kind] if s.change else 0)
    assert s.fee.value * 1000 >= rate_kvb * vsize(weight)                 # fee rate >= target
    assert s.change.value == 0 or s.change.value >= DUST_LIMIT[kind]      # no dust change of the type
    if s.algorithm == "bnb":
        assert s.change.value == 0                                        # BnB never makes change


def test_each_type_prices_its_own_inputs_change_and_dust() -> None:
    p2pkh = SelectionParams.for_type(FeeRate.from_sat_per_vb(1), AddressType.P2PKH)
    p2tr = SelectionParams.for_type(FeeRate.from_sat_per_vb(1), AddressType.P2TR)
    assert (p2pkh.change_output_weight, p2pkh.change_spend_weight, p2pkh.dust_limit) == (136, 592, Satoshis(546))
    assert (p2tr.change_output_weight, p2tr.change_spend_weight, p2tr.dust_limit) == (172, 230, Satoshis(330))
    assert overhead_weight(AddressType.P2PKH) == 40 and overhead_weight(AddressType.P2TR) == 42
