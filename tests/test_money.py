from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kaccy_bitcoin.domain.errors import InvalidAmount, InvalidFeeRate
from kaccy_bitcoin.domain.money import MAX_MONEY_SAT, FeeRate, MilliSatoshis, Satoshis

sats = st.integers(min_value=0, max_value=MAX_MONEY_SAT)


@given(sats)
def test_btc_text_round_trip(value: int) -> None:
    text = Satoshis(value).to_btc()
    assert Satoshis.from_btc(text) == Satoshis(value)
    assert Satoshis.from_btc(Decimal(text)) == Satoshis(value)
    whole, frac = text.split(".")
    assert len(frac) == 8 and int(whole) * 100_000_000 + int(frac) == value


@given(st.integers(min_value=0, max_value=21_000_000), st.integers(min_value=0, max_value=99_999_999),
       st.integers(min_value=0, max_value=4))
def test_parse_accepts_trailing_zeros(whole: int, frac: int, zeros: int) -> None:
    text = f"{whole}.{frac:08d}" + "0" * zeros
    value = whole * 100_000_000 + frac
    if value <= MAX_MONEY_SAT:
        assert Satoshis.from_btc(text).value == value


@given(sats, sats)
def test_addition_and_subtraction(a: int, b: int) -> None:
    if a + b <= MAX_MONEY_SAT:
        assert (Satoshis(a) + Satoshis(b)).value == a + b
    if a >= b:
        assert (Satoshis(a) - Satoshis(b)).value == a - b
    else:
        with pytest.raises(InvalidAmount):
            Satoshis(a) - Satoshis(b)


@pytest.mark.parametrize("bad", ["0.000000001", "-1", "1e-8", "abc", "", "1.2.3", "0x10", " 1 1", "NaN",
                                 "21000000.00000001"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(InvalidAmount):
        Satoshis.from_btc(bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "5", MAX_MONEY_SAT + 1])
def test_constructor_rejects(bad: object) -> None:
    with pytest.raises(InvalidAmount):
        Satoshis(bad)  # type: ignore[arg-type]


def test_sats_and_msats_do_not_mix() -> None:
    with pytest.raises(InvalidAmount):
        MilliSatoshis(1000) + Satoshis(1)  # type: ignore[operator]
    with pytest.raises(TypeError):
        Satoshis(1) + MilliSatoshis(1000)  # type: ignore[operator]
    assert MilliSatoshis.from_sat(Satoshis(3)).value == 3000
    assert MilliSatoshis(3999).to_sat_floor() == Satoshis(3)


@given(st.integers(min_value=0, max_value=10_000_000), st.integers(min_value=1, max_value=400_000))
def test_fee_rounds_up_exactly(rate_kvb: int, vsize: int) -> None:
    fee = FeeRate(rate_kvb).fee_for(vsize).value
    assert fee * 1000 >= rate_kvb * vsize > (fee - 1) * 1000 or fee == 0


def test_fee_rate_parsing() -> None:
    assert FeeRate.from_sat_per_vb("1.5").sat_per_kvb == 1500
    assert FeeRate.from_sat_per_vb(2).sat_per_kvb == 2000
    assert FeeRate.from_btc_per_kvb(Decimal("0.00001000")).sat_per_kvb == 1000
    assert FeeRate.from_btc_per_kvb(Decimal("0.000010001")).sat_per_kvb == 1001
    for bad in ["-1", "1.2345", "x", "1e3"]:
        with pytest.raises(InvalidFeeRate):
            FeeRate.from_sat_per_vb(bad)
