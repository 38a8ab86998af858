"""CoinGrinder (the lightest changeful spend) against brute force, and its place in select_coins."""
from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kaccy_bitcoin.domain.bitcoin import AddressType, OutPoint, Txid
from kaccy_bitcoin.domain.coin_selection import (
    INPUT_WEIGHT,
    OUTPUT_WEIGHT,
    TX_OVERHEAD_WEIGHT,
    Coin,
    SelectionParams,
    coin_grinder,
    select_coins,
)
from kaccy_bitcoin.domain.money import FeeRate, Satoshis

FIXED = TX_OVERHEAD_WEIGHT + OUTPUT_WEIGHT["p2wpkh"]
WEIGHTS = sorted(set(INPUT_WEIGHT.values()))


def coin(n: int, sat: int, weight: int = INPUT_WEIGHT[AddressType.P2WPKH]) -> Coin:
    return Coin(OutPoint(Txid(f"{n:064x}"), 0), Satoshis(sat), weight)


def brute_force(coins: list[Coin], target: int, params: SelectionParams) -> tuple[int, int] | None:
    """(least weight, least effective value at that weight) over every subset reaching target."""
    best = None
    usable = [c for c in coins if params.effective_value(c) > 0]
    for size in range(1, len(usable) + 1):
        for subset in itertools.combinations(usable, size):
            value = sum(params.effective_value(c) for c in subset)
            if value >= target:
                key = (sum(c.input_weight for c in subset), value)
                best = key if best is None or key < best else best
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1_000, 2_000_000), st.sampled_from(WEIGHTS)), min_size=1, max_size=10),
       st.integers(1_000, 6_000_000), st.integers(1_000, 100_000))
def test_coin_grinder_finds_the_lightest_selection(spec: list[tuple[int, int]], target: int, rate_kvb: int) -> None:
    params = SelectionParams(FeeRate(rate_kvb))
    coins = [coin(i, amount, weight) for i, (amount, weight) in enumerate(spec)]
    found = coin_grinder(coins, target, params)
    expected = brute_force(coins, target, params)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert len({c.outpoint for c in found}) == len(found)
    value = sum(params.effective_value(c) for c in found)
    assert value >= target
    assert (sum(c.input_weight for c in found), value) == expected


def test_coin_grinder_prefers_two_light_inputs_to_one_heavy_one() -> None:
    params = SelectionParams(FeeRate.from_sat_per_vb(40))
    heavy = coin(1, 1_000_000, INPUT_WEIGHT[AddressType.P2PKH])      # 592 WU
    light = [coin(2, 300_000, INPUT_WEIGHT[AddressType.P2TR]), coin(3, 300_000, INPUT_WEIGHT[AddressType.P2TR])]
    found = coin_grinder([heavy, *light], 500_000, params)
    assert found is not None and sorted(c.outpoint.txid.value[-1] for c in found) == ["2", "3"]


def test_coin_grinder_gives_up_after_its_tries_with_what_it_has() -> None:
    params = SelectionParams(FeeRate.from_sat_per_vb(40))
    coins = [coin(i, 10_000 + i) for i in range(200)]
    found = coin_grinder(coins, 1_000_000, params, max_tries=50)
    assert found is None or sum(params.effective_value(c) for c in found) >= 1_000_000


def test_high_fee_rate_spends_the_fewest_inputs() -> None:
    # At 40 sat/vB (above the long-term 10) the one coin that covers payout and change wins
    # over the several small ones a random draw may take.
    params = SelectionParams(FeeRate.from_sat_per_vb(40))
    coins = [coin(i, 60_000) for i in range(20)] + [coin(99, 900_000)]
    for seed in range(10):
        s = select_coins(coins, Satoshis(400_000), FIXED, params, random.Random(seed))
        assert len(s.coins) == 1 and s.coins[0].amount == Satoshis(900_000)
