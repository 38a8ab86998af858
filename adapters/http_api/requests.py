"""Reading a request's inputs: each field checked, a clear 400 naming what was wrong."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.errors import ApiError

_MISSING = object()


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


class Body:
    """The JSON object of a request, read field by field; `done()` refuses fields nobody read."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self._read: set[str] = set()

    @property
    def raw_data(self) -> dict[str, Any]:
        return self._data

    def _get(self, name: str, required: bool) -> Any:
        self._read.add(name)
        value = self._data.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise bad(f"{name} is required")
            return None
        return value

    def text(self, name: str, *, required: bool = False, max_length: int = 200, min_length: int = 0) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not min_length <= len(value) <= max_length:
            raise bad(f"{name} must be a string of {min_length} to {max_length} characters, got {value!r:.80}")
        return value

    def integer(self, name: str, *, required: bool = False, low: int = 1, high: int = 2**63 - 1) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(f"{name} must be a whole number from {low} to {high}, got {value!r:.80}")
        return value

    def number_text(self, name: str, *, required: bool = False) -> str | None:
        """A decimal given as a JSON number or string (a fee rate in sat/vB), as text."""
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or len(str(value)) > 30:
            raise bad(f"{name} must be a number (sat/vB), got {value!r:.80}")
        return str(value)

    def choice(self, name: str, choices: tuple[str, ...], *, default: str | None = None) -> str | None:
        value = self._get(name, False)
        if value is None:
            return default
        if value not in choices:
            raise bad(f"{name} must be one of {', '.join(choices)}, got {value!r:.80}")
        return value

    def raw(self, name: str, *, required: bool = False) -> Any:
        return self._get(name, required)

    def payouts(self, name: str, *, required: bool = True, max_count: int = 500) -> list[tuple[str, int]]:
        value = self._get(name, required)
        if value is None:
            return []
        if not isinstance(value, list) or not 1 <= len(value) <= max_count:
            raise bad(f"{name} must be a list of 1 to {max_count} {{\"address\", \"amount_sat\"}} objects")
        out = []
        for n, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {"address", "amount_sat"}:
                raise bad(f"{name}[{n}] must be an object with exactly address and amount_sat")
            address, amount = item["address"], item["amount_sat"]
            if not isinstance(address, str) or not 1 <= len(address) <= 200:
                raise bad(f"{name}[{n}].address must be a string")
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise bad(f"{name}[{n}].amount_sat must be a whole number of sat, got {amount!r:.80}")
            out.append((address, amount))
        return out

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise bad(f"unknown field {unknown[0]!r}")


def query_int(query: Any, name: str, default: int, low: int, high: int, code: str = "invalid_request") -> int:
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ApiError(400, code, f"{name} must be a whole number from {low} to {high}, got {text!r:.80}")
    return int(text)


def query_text(query: Any, name: str, max_length: int = 200) -> str | None:
    text = query.get(name)
    if text is not None and len(text) > max_length:
        raise bad(f"{name} is at most {max_length} characters")
    return text
