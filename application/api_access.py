"""Use cases of the service's access: API keys, webhook subscriptions."""
from __future__ import annotations

import time
from typing import Any, Callable

import attrs

from kaccy_bitcoin.domain.api_access import ApiKey, Webhook, check_webhook_url, key_hash
from kaccy_bitcoin.domain.errors import InvalidWebhook, NotFound
from kaccy_bitcoin.domain.webhook_destinations import check_destination, webhook_host
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.service_store import ServiceStore
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory
from kaccy_bitcoin.ports.webhooks import WebhookTransport


class CreateApiKey:
    """A new key: `{"key_id", "key", "scopes"}`; the key is shown here once, only its hash is kept."""

    def __init__(self, store: ServiceStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def __call__(self, scopes: list[str]) -> dict[str, Any]:
        key, secret = ApiKey.new(scopes, self._clock.now())
        self._store.add_key(key)
        return {"key_id": key.key_id, "key": secret, "scopes": list(key.scopes)}


class ManageApiKeys:
    """List keys (never their secrets) and revoke one."""

    def __init__(self, store: ServiceStore) -> None:
        self._store = store

    def list(self) -> dict[str, Any]:
        return {"keys": [{"key_id": k.key_id, "scopes": list(k.scopes), "created_at": k.created_at.isoformat(),
                          "revoked": k.revoked} for k in self._store.keys()]}

    def revoke(self, key_id: str) -> dict[str, Any]:
        if not self._store.revoke_key(key_id):
            raise NotFound(f"no API key with id {key_id!r}")
        return {"key_id": key_id, "revoked": True}


class Authenticate:
    """The key a presented secret belongs to (None: unknown or revoked). A key found is kept
    in memory by hash for `cache_seconds`, so a busy client costs no database read per request
    and a revocation takes effect within that time in every process."""

    def __init__(self, store: ServiceStore, cache_seconds: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._ttl = cache_seconds
        self._monotonic = monotonic
        self._known: dict[str, tuple[ApiKey, float]] = {}

    def __call__(self, secret: str) -> ApiKey | None:
        digest = key_hash(secret)
        now = self._monotonic()
        cached = self._known.get(digest)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        key = self._store.key_by_hash(digest)
        if key is None or key.revoked:
            self._known.pop(digest, None)
            return None
        if len(self._known) >= 10_000:
            self._known.clear()
        self._known[digest] = (key, now)
        return key


class RegisterWebhook:
    """Subscribe a URL to the events committed from now on: `{"webhook_id", "secret", ...}`.
    A URL whose host resolves to any address webhooks may not go to is refused
    (InvalidWebhookUrl) unless `allow_private`; a name that does not resolve now is taken (each
    delivery checks the addresses again before connecting)."""

    def __init__(self, store: ServiceStore, uow: UnitOfWorkFactory, clock: Clock, transport: WebhookTransport,
                 allow_private: bool = False) -> None:
        self._store = store
        self._uow = uow
        self._clock = clock
        self._transport = transport
        self._allow_private = allow_private

    async def __call__(self, url: object, events: object, key_id: str) -> dict[str, Any]:
        checked = check_webhook_url(url)
        if not self._allow_private:
            check_destination(checked, await self._transport.addresses(webhook_host(checked)), self._allow_private)
        with self._uow.read() as uow:
            last = uow.audit.last_seq()
        webhook = Webhook.new(checked, events, key_id, self._clock.now(), after_seq=last)
        await self._store.run_writing(self._store.add_webhook, webhook)   # may wait for the write lock
        return {**webhook.public(), "secret": webhook.secret}


class ShowWebhooks:
    def __init__(self, store: ServiceStore) -> None:
        self._store = store

    def one(self, webhook_id: str) -> dict[str, Any]:
        webhook = self._store.webhook(webhook_id)
        if webhook is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        return webhook.public()

    def all(self) -> dict[str, Any]:
        return {"webhooks": [w.public() for w in self._store.webhooks()]}

    def delete(self, webhook_id: str) -> dict[str, Any]:
        if not self._store.deactivate_webhook(webhook_id):
            raise NotFound(f"no webhook with id {webhook_id!r}")
        return {"webhook_id": webhook_id, "active": False}


class RedeliverWebhook:
    """Send again every event from `from_seq` on (same delivery ids), at once."""

    def __init__(self, store: ServiceStore, uow: UnitOfWorkFactory) -> None:
        self._store = store
        self._uow = uow

    def __call__(self, webhook_id: str, from_seq: object) -> dict[str, Any]:
        if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 1:
            raise InvalidWebhook(f"from_seq must be a whole number from 1, got {from_seq!r}")
        with self._uow.read() as uow:
            last = uow.audit.last_seq()
        if from_seq > last + 1:
            raise InvalidWebhook(f"from_seq {from_seq} is past the newest event (seq {last})")
        for _ in range(10):
            webhook = self._store.webhook(webhook_id)
            if webhook is None or not webhook.active:
                raise NotFound(f"no active webhook with id {webhook_id!r}")
            rewound = attrs.evolve(webhook, delivered_seq=from_seq - 1, attempts=0, next_attempt_at=None,
                                   last_error=None)
            if self._store.save_webhook_progress(rewound, webhook.delivered_seq):
                return rewound.public()
        raise InvalidWebhook("the webhook kept moving; try again")
