"""Every constraint on a request's inputs, in one table: the app checks a request with these
objects and the OpenAPI generator documents them from the same objects, so a client generated
from /openapi.json never sends what the server refuses with 400.

A field kind knows its JSON schema (`schema()`) and the check that enforces exactly that schema
(`parse(name, value)` for a JSON value, `parse_text(name, text)` for a query or header value);
each refusal is a 400 naming the field. A new field is one line in the table below, a new
route's body is `obj(("required", ...), name=FIELD, ...)`."""
from __future__ import annotations

import abc

import re
from decimal import ROUND_CEILING, Decimal
from typing import Any, Mapping

import attrs

from kaccy_bitcoin.adapters.http_api.errors import ApiError
from kaccy_bitcoin.domain.event_limits import MAX_LIMIT as EVENTS_MAX_LIMIT, MAX_SEQ as EVENTS_MAX_SEQ
from kaccy_bitcoin.domain.limits import PLATFORM
from kaccy_bitcoin.domain.orders import ORDER_ID_PATTERN
from kaccy_bitcoin.domain.wallets import WALLET_NAME_PATTERN

MAX_SAT = 21_000_000 * 100_000_000
MAX_INT64 = 2**63 - 1


def refuse(name: str, message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, f"{name} {message}")


@attrs.frozen(kw_only=True)
class Field(abc.ABC):
    """One input: its description, default (documented) and the error code of a refusal."""

    description: str = ""
    default: Any = None
    code: str = "invalid_request"

    @abc.abstractmethod
    def _schema(self) -> dict[str, Any]:
        """The JSON schema of the value, without description and default."""

    def schema(self) -> dict[str, Any]:
        out = self._schema()
        if self.description:
            out["description"] = self.description
        if self.default is not None:
            out["default"] = self.default
        return out

    @abc.abstractmethod
    def parse(self, name: str, value: Any) -> Any:
        """The value as the handler reads it, or an ApiError naming `name` and what is wrong."""

    def parse_text(self, name: str, text: str) -> Any:
        """A query or header value: text as sent."""
        return self.parse(name, text)


@attrs.frozen(kw_only=True)
class Text(Field):
    """A string of `min_length` to `max_length` characters matching `pattern` (searched, so
    anchor it with ^ and $ as JSON Schema does)."""

    min_length: int = 0
    max_length: int = 200
    pattern: str | None = None
    format: str | None = None
    reserved: tuple[str, ...] = ()     # values refused although they match
    content_code: str | None = None    # the domain's code for a pattern or reserved value (else `code`)

    def _schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "minLength": self.min_length, "maxLength": self.max_length}
        if self.pattern:
            out["pattern"] = self.pattern
        if self.format:
            out["format"] = self.format
        if self.reserved:
            out["not"] = {"enum": list(self.reserved)}
        return out

    def parse(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not self.min_length <= len(value) <= self.max_length:
            raise refuse(name, f"must be a string of {self.min_length} to {self.max_length} characters, "
                               f"got {value!r:.80}", self.code)
        if self.pattern and not re.search(self.pattern, value):
            raise refuse(name, f"must match {self.pattern}, got {value!r:.80}", self.content_code or self.code)
        if value in self.reserved:
            raise refuse(name, f"cannot be {value!r} (reserved)", self.content_code or self.code)
        return value


@attrs.frozen(kw_only=True)
class Integer(Field):
    """A whole number from `low` to `high` (in a query: decimal digits)."""

    low: int = 1
    high: int = MAX_INT64

    def _schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}

    def parse(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise refuse(name, f"must be a whole number from {self.low} to {self.high}, got {value!r:.80}", self.code)
        return value

    def parse_text(self, name: str, text: str) -> int:
        if not (text.isascii() and text.isdigit() and len(text) <= 30):
            raise refuse(name, f"must be a whole number from {self.low} to {self.high}, got {text!r:.80}", self.code)
        return self.parse(name, int(text))


@attrs.frozen(kw_only=True)
class Choice(Field):
    values: tuple[str, ...]

    def _schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.values)}

    def parse(self, name: str, value: Any) -> str:
        if value not in self.values:
            raise refuse(name, f"must be one of {', '.join(self.values)}, got {value!r:.80}", self.code)
        return value


@attrs.frozen(kw_only=True)
class Flag(Field):
    """true or false (JSON booleans only)."""

    def _schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def parse(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise refuse(name, f"must be true or false, got {value!r:.80}", self.code)
        return value


@attrs.frozen(kw_only=True)
class FeeRateField(Field):
    """sat/vB: a JSON number (more than 3 decimals round up to the next 0.001) or a decimal
    string with at most 3 decimals; answers the domain's `FeeRate`."""

    high: int = 1_000_000

    def _schema(self) -> dict[str, Any]:
        return {"oneOf": [{"type": "number", "minimum": 0, "maximum": self.high},
                          {"type": "string", "pattern": r"^[0-9]{1,7}(\.[0-9]{1,3})?$"}]}

    def parse(self, name: str, value: Any) -> Any:
        from kaccy_bitcoin.domain.money import FeeRate

        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,7}(\.[0-9]{1,3})?", value):
            return FeeRate.from_sat_per_vb(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= self.high:
            exact = Decimal(repr(value)).quantize(Decimal("0.001"), rounding=ROUND_CEILING)
            return FeeRate.from_sat_per_vb(exact)
        raise refuse(name, f"must be a number of sat/vB from 0 to {self.high} (a JSON number, or a string with "
                           f"at most 3 decimals), got {value!r:.80}", self.code)


@attrs.frozen(kw_only=True)
class ListOf(Field):
    """A JSON array of `low` to `high` items, each checked by `item`."""

    item: Field | Fields
    low: int = 1
    high: int = 500

    def _schema(self) -> dict[str, Any]:
        return {"type": "array", "minItems": self.low, "maxItems": self.high, "items": self.item.schema()}

    def parse(self, name: str, value: Any) -> list[Any]:
        if not isinstance(value, list) or not self.low <= len(value) <= self.high:
            raise refuse(name, f"must be a list of {self.low} to {self.high} items, got {value!r:.80}", self.code)
        return [self.item.parse(f"{name}[{n}]", v) for n, v in enumerate(value)]


@attrs.frozen
class Fields:
    """A JSON object: these fields, the `required` ones present, no other. An optional field
    may be null (the same as absent). Build one with `obj(("required", ...), name=FIELD, ...)`."""

    required: tuple[str, ...]
    fields: Mapping[str, Field]
    any_of: tuple[tuple[str, ...], ...] = ()    # the fields given include one of these groups
    needs: tuple[tuple[str, str], ...] = ()     # (a, b): a given needs b given
    rules_code: str = "invalid_request"         # the code of a refusal by those two rules

    def schema(self) -> dict[str, Any]:
        props = {n: {**f.schema(), **({} if n in self.required else {"nullable": True})}
                 for n, f in self.fields.items()}
        out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        if self.required:
            out["required"] = list(self.required)
        rules = []
        if self.any_of:
            rules.append({"anyOf": [self._given(*group) for group in self.any_of]})
        rules += [{"anyOf": [self._given(b), {"not": self._given(a)}]} for a, b in self.needs]
        if rules:
            out["allOf"] = rules
        return out

    def _given(self, *names: str) -> dict[str, Any]:
        """Present and not null (an optional field's null is the same as its absence)."""
        return {"required": list(names), "properties": {n: {"type": self.fields[n].schema()["type"]} for n in names}}

    def _check_rules(self, prefix: str, given: set[str]) -> None:
        if self.any_of and not any(set(group) <= given for group in self.any_of):
            raise ApiError(400, self.rules_code,
                           f"give {' or '.join(' and '.join(prefix + n for n in g) for g in self.any_of)}")
        for a, b in self.needs:
            if a in given and b not in given:
                raise ApiError(400, self.rules_code, f"{prefix}{a} needs {prefix}{b}")

    def parse(self, name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise refuse(name, "must be a JSON object")
        prefix = f"{name}." if name else ""
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            raise bad(f"unknown field {prefix}{unknown[0]!r:.80}")
        out = {}
        for field_name, field in self.fields.items():
            given = value.get(field_name)
            if given is None:
                if field_name in self.required:
                    raise bad(f"{prefix}{field_name} is required")
                out[field_name] = field.default
            else:
                out[field_name] = field.parse(prefix + field_name, given)
        self._check_rules(prefix, {n for n, v in value.items() if v is not None})
        return out


def obj(required: tuple[str, ...] | list[str] = (), *, any_of: tuple[tuple[str, ...], ...] = (),
        needs: tuple[tuple[str, str], ...] = (), rules_code: str = "invalid_request", **fields: Field) -> Fields:
    named = set(required) | {n for g in any_of for n in g} | {n for pair in needs for n in pair}
    assert named <= set(fields), f"rules name undeclared fields: {named - set(fields)}"
    assert all(isinstance(f, (Field, Fields)) for f in fields.values()), "fields come from http_api/fields.py"
    return Fields(tuple(required), dict(fields), any_of, needs, rules_code)


# Each address type's encoding (any network) and the domain's dust limit for it: a payout is
# one of these pairs. The domain checks the same (Address parsing, DUST_LIMIT) for the CLI too.
_ADDRESS_PATTERNS = {
    "p2pkh": r"^[1mn][1-9A-HJ-NP-Za-km-z]{25,34}$",
    "p2sh": r"^[23][1-9A-HJ-NP-Za-km-z]{25,34}$",
    "p2wpkh": r"^(bc|tb|bcrt)1q[02-9ac-hj-np-z]{38}$",
    "p2wsh": r"^(bc|tb|bcrt)1q[02-9ac-hj-np-z]{58}$",
    "p2tr": r"^(bc|tb|bcrt)1p[02-9ac-hj-np-z]{58}$",
}


@attrs.frozen(kw_only=True)
class Payout(Field):
    """`{"address", "amount_sat"}`: the address's type sets the least amount (its dust limit)."""

    def _fields(self) -> Fields:
        return obj(("address", "amount_sat"), address=ADDRESS, amount_sat=Integer(high=MAX_SAT, code="invalid_amount"))

    def _schema(self) -> dict[str, Any]:
        from kaccy_bitcoin.domain.bitcoin import AddressType
        from kaccy_bitcoin.domain.coin_selection import DUST_LIMIT

        out = self._fields().schema()
        out["anyOf"] = [{"properties": {"address": {"pattern": _ADDRESS_PATTERNS[kind.value]},
                                        "amount_sat": {"minimum": DUST_LIMIT[kind]}}}
                        for kind in AddressType]
        return out

    def parse(self, name: str, value: Any) -> tuple[str, int]:
        """The shape here; the address and its dust limit: the domain's (`invalid_address`, `dust_output`)."""
        checked = self._fields().parse(name, value)
        return checked["address"], checked["amount_sat"]


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def parse_query(query: Mapping[str, str], fields: Mapping[str, Field]) -> dict[str, Any]:
    """The declared query parameters, checked (others are ignored, as HTTP has it)."""
    return {n: f.default if query.get(n) is None else f.parse_text(n, query[n]) for n, f in fields.items()}


# -- the table: the fields routes share ------------------------------------------------------
SIGNERS = ("software", "hwi", "core")
LISTED_WITHDRAWAL_STATES = ("created", "held", "partially_signed", "signed", "finalized", "broadcast", "confirmed")

# RFC 9110 strips a header value's outer spaces: a key neither starts nor ends with one.
IDEMPOTENCY_KEY = Text(min_length=1, max_length=200, pattern=r"^[!-~]([ -~]*[!-~])?$", code="invalid_idempotency_key",
                       description="1 to 200 printable ASCII characters, no space at either end; the same key and "
                                   "body again replays the first answer, another body: 422 idempotency_key_reused")
ORDER_ID = Text(min_length=1, max_length=128, pattern=ORDER_ID_PATTERN, content_code="invalid_order",
                description="letters, digits and ._:@/-, starting with a letter or digit")
# A user: not blank, and not the name of the platform-wide limits.
USER = Text(min_length=1, max_length=128, pattern=r"\S", reserved=(PLATFORM,), content_code="invalid_user",
            description="whose payout: their limits and risk review")
BY = Text(min_length=1, max_length=128, description="the operator, for the audit trail (default: the API key's id)")
WALLET = Text(min_length=1, max_length=32, pattern=WALLET_NAME_PATTERN, content_code="invalid_wallet",
              description="the wallet to pay from (default: routed by tier)")
LABEL = Text(max_length=500)
AMOUNT_SAT = Integer(high=MAX_SAT)
AMOUNT_MSAT = Integer(high=MAX_SAT * 1000)
FEE_RATE = FeeRateField(description="sat/vB", code="invalid_fee_rate")
SIGNER = Choice(values=SIGNERS)
ADDRESS = Text(min_length=1, max_length=200, format="bitcoin-address",
               description="an address of the deployment's network (valid checksum)")
PAYOUTS = ListOf(item=Payout(), high=500, description="{address, amount_sat}, each at least its type's dust limit")
PSBT = Text(min_length=1, max_length=1_000_000, format="byte", description="base64 PSBT")
PAYMENT_REQUEST = Text(min_length=1, max_length=4000, description="a BOLT11 payment request")
# As on the command line: 0 is no routing fee at all; above the ppm cap is the domain's fee_too_high.
MAX_FEE_SAT = Integer(low=0, high=MAX_SAT)
NODE_URI = Text(min_length=70, max_length=330, pattern=r"^0[23][0-9a-f]{64}@\S+:[0-9]{1,5}$", code="invalid_lightning_value",
                description="the peer as PUBKEY@HOST:PORT")
# The outbox's bounds are the use case's (domain/event_limits.py), with its error code.
EVENTS_AFTER = Integer(low=0, high=EVENTS_MAX_SEQ, default=0, code="invalid_event_request")
EVENTS_LIMIT = Integer(low=1, high=EVENTS_MAX_LIMIT, default=100, code="invalid_event_request")
# ISO 8601 or Unix seconds: a real calendar day (leap years counted), then optionally a time
# and an offset; what Python's datetime.fromisoformat reads, written as a pattern.
_MONTH_DAY = r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
_LEAP_YEAR = r"([1-9][0-9](0[48]|[2468][048]|[13579][26])|(1[26]|[2468][048]|[3579][26])00)"
_DATE = rf"([1-9][0-9]{{3}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)"
SINCE = Text(min_length=1, max_length=40, pattern=rf"^([0-9]{{1,11}}|{_DATE}{_TIME}?)$",
             description="ISO 8601 (e.g. 2026-01-31 or 2026-01-31T12:00:00Z) or Unix seconds")
