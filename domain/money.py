"""Amounts and fee rates: integers only, exact decimal parsing, no floats anywhere."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

import attrs

from kaccy_bitcoin.domain.errors import InvalidAmount, InvalidFeeRate

SATS_PER_BTC = 100_000_000
MAX_MONEY_SAT = 21_000_000 * SATS_PER_BTC
_BTC_TEXT = re.compile(r"^(?P<whole>\d+)(?:\.(?P<frac>\d+))?$")


def _require_int(kind: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"{kind} must be an integer, got {type(value).__name__} {value!r}")
    return value


def _check_sat(instance: object, attribute: attrs.Attribute, value: object) -> None:
    value = _require_int("Satoshis", value)
    if value < 0:
        raise InvalidAmount(f"amount cannot be negative: {value} sat")
    if value > MAX_MONEY_SAT:
        raise InvalidAmount(f"amount exceeds 21 million BTC: {value} sat")


@attrs.frozen(order=True)
class Satoshis:
    """A non-negative amount of bitcoin in satoshis."""

    value: int = attrs.field(validator=_check_sat)

    @classmethod
    def from_btc(cls, text: str | Decimal) -> Satoshis:
        """Parse a BTC amount such as "0.00012345" exactly (at most 8 decimals)."""
        if isinstance(text, Decimal):
            if not text.is_finite() or text < 0:
                raise InvalidAmount(f"not a BTC amount: {text}")
            scaled = text * SATS_PER_BTC
            if scaled != scaled.to_integral_value():
                raise InvalidAmount(f"BTC amount has more than 8 decimals: {text}")
            return cls(int(scaled))
        if not isinstance(text, str):
            raise InvalidAmount(f"BTC amount must be text or Decimal, got {type(text).__name__}")
        m = _BTC_TEXT.match(text.strip())
        if not m:
            raise InvalidAmount(f"not a BTC amount: {text!r}")
        frac = (m.group("frac") or "").rstrip("0")
        if len(frac) > 8:
            raise InvalidAmount(f"BTC amount has more than 8 decimals: {text!r}")
        return cls(int(m.group("whole")) * SATS_PER_BTC + int(frac.ljust(8, "0") or "0"))

    def to_btc(self) -> str:
        """Format as a BTC decimal string with exactly 8 decimals."""
        whole, frac = divmod(self.value, SATS_PER_BTC)
        return f"{whole}.{frac:08d}"

    def to_decimal(self) -> Decimal:
        return Decimal(self.to_btc())

    def __add__(self, other: Satoshis) -> Satoshis:
        if not isinstance(other, Satoshis):
            return NotImplemented
        return Satoshis(self.value + other.value)

    def __sub__(self, other: Satoshis) -> Satoshis:
        if not isinstance(other, Satoshis):
            return NotImplemented
        if other.value > self.value:
            raise InvalidAmount(f"{self.value} sat - {other.value} sat would be negative")
        return Satoshis(self.value - other.value)

    def __int__(self) -> int:
        return self.value

    def __bool__(self) -> bool:
        return self.value != 0

    def __str__(self) -> str:
        return f"{self.value} sat"

    @classmethod
    def zero(cls) -> Satoshis:
        return cls(0)

    @classmethod
    def total(cls, amounts: object) -> Satoshis:
        return cls(sum(a.value for a in amounts))  # type: ignore[attr-defined]


def _check_msat(instance: object, attribute: attrs.Attribute, value: object) -> None:
    value = _require_int("MilliSatoshis", value)
    if value < 0:
        raise InvalidAmount(f"amount cannot be negative: {value} msat")
    if value > MAX_MONEY_SAT * 1000:
        raise InvalidAmount(f"amount exceeds 21 million BTC: {value} msat")


@attrs.frozen(order=True)
class MilliSatoshis:
    """A non-negative Lightning amount in millisatoshis; never mixes with Satoshis."""

    value: int = attrs.field(validator=_check_msat)

    @classmethod
    def from_sat(cls, sat: Satoshis) -> MilliSatoshis:
        return cls(sat.value * 1000)

    def to_sat_floor(self) -> Satoshis:
        return Satoshis(self.value // 1000)

    def __add__(self, other: MilliSatoshis) -> MilliSatoshis:
        if not isinstance(other, MilliSatoshis):
            raise InvalidAmount(f"cannot add {type(other).__name__} to MilliSatoshis")
        return MilliSatoshis(self.value + other.value)

    def __sub__(self, other: MilliSatoshis) -> MilliSatoshis:
        if not isinstance(other, MilliSatoshis):
            raise InvalidAmount(f"cannot subtract {type(other).__name__} from MilliSatoshis")
        if other.value > self.value:
            raise InvalidAmount(f"{self.value} msat - {other.value} msat would be negative")
        return MilliSatoshis(self.value - other.value)

    def __str__(self) -> str:
        return f"{self.value} msat"


_RATE_TEXT = re.compile(r"^\d+(?:\.\d{1,3})?$")


def _check_rate(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFeeRate(f"fee rate must be an integer sat/kvB, got {value!r}")
    if value < 0:
        raise InvalidFeeRate(f"fee rate cannot be negative: {value} sat/kvB")


@attrs.frozen(order=True)
class FeeRate:
    """A fee rate, held exactly as satoshis per 1000 virtual bytes (0.001 sat/vB steps)."""

    sat_per_kvb: int = attrs.field(validator=_check_rate)

    @classmethod
    def from_sat_per_vb(cls, rate: str | int | Decimal) -> FeeRate:
        if isinstance(rate, bool):
            raise InvalidFeeRate(f"not a fee rate: {rate!r}")
        if isinstance(rate, int):
            return cls(rate * 1000)
        text = str(rate).strip()
        if not _RATE_TEXT.match(text):
            raise InvalidFeeRate(f"not a fee rate in sat/vB (at most 3 decimals): {rate!r}")
        return cls(int(Decimal(text) * 1000))

    @classmethod
    def from_btc_per_kvb(cls, rate: Decimal) -> FeeRate:
        """Bitcoin Core's unit (estimatesmartfee, mempoolminfee); rounds up to whole sat/kvB."""
        try:
            sat = Decimal(rate) * SATS_PER_BTC
        except InvalidOperation as exc:
            raise InvalidFeeRate(f"not a fee rate: {rate!r}") from exc
        if not sat.is_finite() or sat < 0:
            raise InvalidFeeRate(f"not a fee rate: {rate!r}")
        return cls(int(sat.to_integral_value(rounding="ROUND_CEILING")))

    def fee_for(self, vsize: int) -> Satoshis:
        """Fee for a transaction of `vsize` virtual bytes, rounded up."""
        return Satoshis(-(-vsize * self.sat_per_kvb // 1000))

    @property
    def sat_per_vb(self) -> Decimal:
        return Decimal(self.sat_per_kvb) / 1000

    def __str__(self) -> str:
        return f"{self.sat_per_vb.normalize()} sat/vB"
