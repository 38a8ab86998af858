"""Who may call the HTTP API, and the signed webhooks it sends: API keys with scopes, webhook
subscriptions and their delivery signatures. Pure: hashing and HMAC from the standard library."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Any, Iterable

import attrs

from kaccy_bitcoin.domain.errors import InvalidApiKeyRequest, InvalidWebhook
from kaccy_bitcoin.domain.events import EVENT_KINDS

SCOPES = ("read", "orders", "withdraw", "admin")
KEY_PREFIX = "kaccy_"
WEBHOOK_URL_MAX = 2000
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
WEBHOOK_URL_PATTERN = _URL.pattern   # the HTTP API documents and checks the same


def key_hash(key: str) -> str:
    """SHA-256 of the key: the key is 256 random bits, so no slow hash or salt is needed."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(scopes: Iterable[object]) -> tuple[str, ...]:
    chosen = list(scopes)
    if not chosen:
        raise InvalidApiKeyRequest(f"give at least one scope (of {', '.join(SCOPES)})")
    bad = [s for s in chosen if s not in SCOPES]
    if bad:
        raise InvalidApiKeyRequest(f"unknown scope {bad[0]!r}: the scopes are {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in chosen)


@attrs.frozen
class ApiKey:
    """A stored key: its id (public, in logs), the hash of its secret, what it may do."""

    key_id: str
    key_hash: str
    scopes: tuple[str, ...] = attrs.field(converter=parse_scopes)
    created_at: dt.datetime
    revoked: bool = False

    @classmethod
    def new(cls, scopes: Iterable[object], now: dt.datetime) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once; only the hash is kept)."""
        key_id = "key_" + secrets.token_hex(8)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        return cls(key_id, key_hash(secret), tuple(scopes), now), secret

    def allows(self, scope: str) -> bool:
        """`admin` may do everything."""
        return not self.revoked and (scope in self.scopes or "admin" in self.scopes)

    def sees_signing_material(self) -> bool:
        """Whether withdrawals are shown to this key with their PSBTs (and the signatures in
        them): only to a key that may act on withdrawals (`withdraw`, `admin`), never to `read`."""
        return self.allows("withdraw")


def parse_event_kinds(kinds: object) -> tuple[str, ...] | None:
    if kinds is None:
        return None
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise InvalidWebhook("events must be a non-empty list of event kinds, or left out for every kind")
    unknown = sorted(set(kinds) - EVENT_KINDS)
    if unknown:
        raise InvalidWebhook(f"unknown event kind {unknown[0]!r}; known: {', '.join(sorted(EVENT_KINDS))}")
    return tuple(sorted(set(kinds)))


def check_webhook_url(url: object) -> str:
    if not isinstance(url, str) or len(url) > WEBHOOK_URL_MAX or not _URL.match(url):
        raise InvalidWebhook(f"url must be an http(s) URL of at most {WEBHOOK_URL_MAX} characters, got {url!r}")
    return url


@attrs.frozen
class Webhook:
    """A subscription: every committed event (of `events` kinds, or all) is POSTed to `url`
    in outbox order. `delivered_seq` is the cursor: every event up to it was answered with a
    2xx (or is of a kind this webhook does not want). The event after the cursor is retried,
    `attempts` times so far, next at `next_attempt_at`; later events wait behind it."""

    webhook_id: str
    url: str
    secret: str
    events: tuple[str, ...] | None
    key_id: str
    created_at: dt.datetime
    delivered_seq: int = 0
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    last_error: str | None = None
    active: bool = True

    @classmethod
    def new(cls, url: object, events: object, key_id: str, now: dt.datetime, after_seq: int) -> Webhook:
        return cls("wh_" + secrets.token_hex(8), check_webhook_url(url), "whsec_" + secrets.token_hex(32),
                   parse_event_kinds(events), key_id, now, delivered_seq=after_seq)

    def wants(self, kind: str) -> bool:
        return self.events is None or kind in self.events

    def delivery_id(self, seq: int) -> str:
        """The same for every attempt and redelivery of one event to this webhook."""
        return f"{self.webhook_id}:{seq}"

    def public(self) -> dict[str, Any]:
        return {"webhook_id": self.webhook_id, "url": self.url,
                "events": list(self.events) if self.events is not None else None,
                "delivered_seq": self.delivered_seq, "attempts": self.attempts,
                "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
                "last_error": self.last_error, "active": self.active,
                "created_at": self.created_at.isoformat()}


def retry_delay(attempts: int, first: float = 1.0, cap: float = 300.0) -> float:
    """Seconds before attempt `attempts + 1`: doubling from `first`, at most `cap`."""
    return min(cap, first * 2 ** max(0, attempts - 1))


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """`t=UNIX_SECONDS,v1=HEX`, HEX = HMAC-SHA256(secret, "{t}.{raw body}")."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, now: int, tolerance: int = 300) -> bool:
    """What a receiver does: the timestamp is recent and the HMAC matches (constant time)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature_header(secret, body, timestamp), f"t={timestamp},v1={parts.get('v1', '')}")
