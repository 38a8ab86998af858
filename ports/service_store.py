"""Storage of the service's own records: API keys, idempotency records, webhook subscriptions
with their delivery cursors, and the counts the metrics report. Each method is its own short
transaction (none of these joins a use case's unit of work).

The methods that write may wait for the database (SQLite's write lock, while another process
writes, up to the busy timeout): async code calls them through `run_writing`, never directly.
The reading methods wait for no writer (on SQLite they read a WAL snapshot)."""
from __future__ import annotations

import abc
import datetime as dt
from typing import Any, Callable, TypeVar

import attrs

from kaccy_bitcoin.domain.api_access import ApiKey, Webhook


@attrs.frozen
class IdempotencyRecord:
    """What a key was first used for: the request's fingerprint, then (once done) the answer."""

    request_hash: str
    status: int | None
    response: Any


T = TypeVar("T")


class IdempotencyKeyTaken(Exception):
    """IdempotencyReceipt.claim: the key has a record already (nothing was written); the caller
    answers from that record, as `ServiceStore.claim_idempotency` gives it."""


class IdempotencyReceipt(abc.ABC):
    """An Idempotency-Key's claim and answer written inside a use case's own units of work, so
    a request that changes something costs no transaction of its own for either.

    The use case calls `claim(uow)` in its first unit of work (the key is then taken exactly
    when that unit of work's changes commit, or not at all) and `answer(uow, body)` in the unit
    of work whose commit makes `body` its final answer; `claimed` and `answered` turn True once
    those commits are made. The caller (the HTTP layer) records what the use case did not:
    the answer of a claimed request that was not answered inside (an error, or an answer only
    final after a step outside any transaction), or, for a request that failed before its
    claim, the claim and the error as if it had claimed first."""

    def __init__(self) -> None:
        self.claimed = False
        self.answered = False

    @abc.abstractmethod
    def claim(self, uow: Any) -> None:
        """Take the key in `uow`'s transaction; IdempotencyKeyTaken if it has a record."""

    @abc.abstractmethod
    def answer(self, uow: Any, body: Any) -> None:
        """Record `body` as the request's answer in `uow`'s transaction (after `claim`)."""


class ServiceStore(abc.ABC):
    @abc.abstractmethod
    async def run_writing(self, method: Callable[..., T], *args: Any) -> T:
        """`method(*args)`, one of this store's writing methods, called from async code without
        blocking the event loop while it waits for the database (the SQL store: in a thread, in
        this process's turn to write)."""

    @abc.abstractmethod
    def add_key(self, key: ApiKey) -> None:
        """Store a new API key."""

    @abc.abstractmethod
    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key whose secret hashes to `key_hash`, if any."""

    @abc.abstractmethod
    def keys(self) -> list[ApiKey]:
        """Every key, oldest first (their hashes, never the secrets)."""

    @abc.abstractmethod
    def revoke_key(self, key_id: str) -> bool:
        """Refuse this key from now on; False if there is no such key."""

    @abc.abstractmethod
    def claim_idempotency(self, key_id: str, idem_key: str, request_hash: str,
                          now: dt.datetime) -> IdempotencyRecord | None:
        """Claim `idem_key` for this request; None when it is new (the caller runs the request
        and calls `finish_idempotency`), else the record of its first use."""

    @abc.abstractmethod
    def finish_idempotency(self, key_id: str, idem_key: str, status: int, response: Any) -> None:
        """Keep the answer of a claimed request, to replay it."""

    @abc.abstractmethod
    def release_idempotency(self, key_id: str, idem_key: str) -> None:
        """Forget a claim whose request failed before it changed anything (it may be retried)."""

    def receipt(self, key_id: str, idem_key: str, request_hash: str, now: dt.datetime,
                status: int) -> IdempotencyReceipt | None:
        """A receipt whose claim and answer (with `status`) ride along the use case's units of
        work; None when this store cannot write in them (then claim first, answer after)."""
        return None

    @abc.abstractmethod
    def add_webhook(self, webhook: Webhook) -> None:
        """Store a new subscription."""

    @abc.abstractmethod
    def webhooks(self) -> list[Webhook]:
        """Every active subscription, oldest first."""

    @abc.abstractmethod
    def webhook(self, webhook_id: str) -> Webhook | None:
        """One subscription (active or not)."""

    @abc.abstractmethod
    def save_webhook_progress(self, webhook: Webhook, expected_seq: int) -> bool:
        """Write the cursor, attempts, next attempt and last error, only if the stored cursor is
        still `expected_seq` (another writer, e.g. a redelivery, wins otherwise); True if written."""

    @abc.abstractmethod
    def deactivate_webhook(self, webhook_id: str) -> bool:
        """Stop delivering to a subscription; False if there is none."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counts for the metrics: payments by state, received sat (confirmed), withdrawals by
        state, the outbox's last seq."""

    @abc.abstractmethod
    def check_writable(self, wait_seconds: float) -> None:
        """Open a write transaction and write nothing; raises when the database cannot be written,
        or DatabaseBusy when another writer holds it longer than `wait_seconds`."""
