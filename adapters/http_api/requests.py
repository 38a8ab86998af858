"""A request's inputs as a handler reads them: already checked against the route's declared
fields (adapters/http_api/fields.py), the same objects the OpenAPI document is made from."""
from __future__ import annotations

from typing import Any, Mapping

from kaccy_bitcoin.adapters.http_api.fields import Field, Fields, bad, parse_query


class Inputs:
    """Checked values by name (a field not given: its default, else None)."""

    def __init__(self, values: dict[str, Any], raw: dict[str, Any] | None = None) -> None:
        self._values = values
        self._raw = raw if raw is not None else {}

    @property
    def raw_data(self) -> dict[str, Any]:
        """The body as sent (the idempotency fingerprint)."""
        return self._raw

    def get(self, name: str) -> Any:
        if name not in self._values:
            raise AssertionError(f"{name!r} is not a declared field of this route")
        return self._values[name]

    def __getitem__(self, name: str) -> Any:
        return self.get(name)


def read_body(data: dict[str, Any], fields: Fields | None) -> Inputs:
    if fields is None:
        return Inputs({})
    return Inputs(fields.parse("", data), data)


def read_query(query: Mapping[str, str], fields: Mapping[str, Field]) -> Inputs:
    return Inputs(parse_query(query, fields))


__all__ = ["Inputs", "bad", "read_body", "read_query"]
