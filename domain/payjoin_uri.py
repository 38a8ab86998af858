"""BIP21 payment URIs with BIP78's payjoin parameters, as a sender reads them, and the query a
sender adds to its POST. Pure: no network."""
from __future__ import annotations

import ipaddress
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import attrs

from kaccy_bitcoin.domain.bitcoin import Address, Network
from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.money import SATS_PER_BTC, FeeRate, Satoshis

VERSION = 1
WELL_KNOWN_ERRORS = ("unavailable", "not-enough-money", "version-unsupported", "original-psbt-rejected")


class InvalidPaymentUri(DomainError):
    """A BIP21 URI we cannot pay: not `bitcoin:`, no address or amount, a `req-` parameter we do
    not know, an address of another network."""

    code = "invalid_uri"


# -- the URI ---------------------------------------------------------------------------------


@attrs.frozen
class PaymentUri:
    address: Address
    amount: Satoshis
    endpoint: str | None        # pj=
    output_substitution: bool   # False when pjos=0


def _amount(text: str) -> Satoshis:
    try:
        btc = Decimal(text)
    except InvalidOperation:
        raise InvalidPaymentUri(f"amount={text!r} is not a number of bitcoins") from None
    sat = btc * SATS_PER_BTC
    if not btc.is_finite() or sat != sat.to_integral_value() or sat <= 0 or btc > 21_000_000:
        raise InvalidPaymentUri(f"amount={text!r} is not a positive amount of whole satoshis")
    return Satoshis(int(sat))


def parse_payment_uri(text: str, network: Network) -> PaymentUri:
    """BIP21 with BIP78's `pj=` and `pjos=`; the amount is required (it is what we pay)."""
    if not isinstance(text, str) or not text.lower().startswith("bitcoin:"):
        raise InvalidPaymentUri(f"not a bitcoin: URI: {text!r}")
    body = text[len("bitcoin:"):]
    where, _, query = body.partition("?")
    if not where:
        raise InvalidPaymentUri("the URI names no address")
    bech32 = where.lower().startswith(("bc1", "tb1", "bcrt1"))
    address = Address(where.lower() if bech32 else where, network)
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        key = key.lower()
        if key in params:
            raise InvalidPaymentUri(f"parameter {key!r} appears twice")
        params[key] = value
    unknown = [k for k in params if k.startswith("req-")]
    if unknown:
        raise InvalidPaymentUri(f"required parameter {unknown[0]!r} is not one we know (BIP21)")
    if "amount" not in params:
        raise InvalidPaymentUri("the URI has no amount: a payjoin withdrawal pays the URI's amount")
    pjos = params.get("pjos", "1")
    if pjos not in ("0", "1"):
        raise InvalidPaymentUri(f"pjos={pjos!r}: expected 0 or 1")
    return PaymentUri(address, _amount(params["amount"]), params.get("pj") or None, pjos != "0")


def endpoint_refusal(endpoint: str, network: Network) -> str | None:
    """Why we would not POST to `endpoint` (None: we may). BIP78: https, or an onion service;
    plain http only to a loopback address, or on regtest."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
    except ValueError:
        return "invalid_endpoint"
    if parts.scheme not in ("https", "http") or not host:
        return "invalid_endpoint"
    if parts.scheme == "https" or host.endswith(".onion") or network is Network.REGTEST:
        return None
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return "insecure_endpoint"


@attrs.frozen
class RequestParams:
    """The query BIP78 lets a sender add to its POST."""

    fee_output_index: int | None
    max_additional_fee: Satoshis
    min_fee_rate: FeeRate
    output_substitution: bool

    def url(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        query = parse_qsl(parts.query, keep_blank_values=True)
        query.append(("v", str(VERSION)))
        if self.fee_output_index is not None:
            query += [("additionalfeeoutputindex", str(self.fee_output_index)),
                      ("maxadditionalfeecontribution", str(self.max_additional_fee.value))]
        rate = Decimal(self.min_fee_rate.sat_per_kvb) / 1000
        query.append(("minfeerate", format(rate.normalize(), "f")))
        if not self.output_substitution:
            query.append(("disableoutputsubstitution", "true"))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, quote_via=quote), parts.fragment))


def receiver_error_reason(error_code: object) -> str:
    """`receiver_error:<errorCode>` for BIP78's well-known codes; any other code is the receiver's
    own text, never shown as such (BIP78: it could be used to phish): `receiver_error:other`."""
    return f"receiver_error:{error_code if error_code in WELL_KNOWN_ERRORS else 'other'}"
