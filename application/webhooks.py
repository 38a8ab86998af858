"""Delivering webhooks from the outbox.

Each subscription keeps a cursor in the outbox (`delivered_seq`, in the database): events are
sent in seq order, one at a time per webhook; a 2xx moves the cursor, anything else (or no
answer) leaves it and schedules the same event again after a doubling delay. Nothing is held in
memory between rounds, so a restart resumes where the database says: every event is delivered
at least once, and its `delivery_id` (webhook id and seq) lets a receiver drop a repeat.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any, Callable

import attrs

from kaccy_bitcoin.domain.api_access import Webhook, retry_delay, signature_header
from kaccy_bitcoin.domain.events import StoredEvent
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.service_store import ServiceStore
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory
from kaccy_bitcoin.ports.webhooks import WebhookTransport, WebhookUnreachable


def delivery_body(webhook: Webhook, stored: StoredEvent) -> bytes:
    return json.dumps({**stored.to_dict(), "delivery_id": webhook.delivery_id(stored.seq)},
                      separators=(",", ":")).encode()


@attrs.frozen
class DeliverySettings:
    batch: int = 100
    first_retry: float = 1.0
    max_retry: float = 30.0


class DeliverWebhooks:
    """One round over every active webhook: send what is due, note what happened.
    `on_attempt(webhook_id, ok)` is told of each attempt (the metrics count failures)."""

    def __init__(self, store: ServiceStore, uow: UnitOfWorkFactory, transport: WebhookTransport, clock: Clock,
                 settings: DeliverySettings | None = None,
                 on_attempt: Callable[[str, bool], None] | None = None) -> None:
        self._store = store
        self._uow = uow
        self._transport = transport
        self._clock = clock
        self._settings = settings or DeliverySettings()
        self.on_attempt = on_attempt

    async def __call__(self) -> int:
        """Deliver what is due, every webhook at once; the number of events delivered."""
        due = self.due()
        if not due:
            return 0
        return sum(await asyncio.gather(*(self.deliver(w) for w in due)))

    def due(self) -> list[Webhook]:
        """The active webhooks whose next attempt is now or past."""
        now = self._clock.now()
        return [w for w in self._store.webhooks() if w.next_attempt_at is None or w.next_attempt_at <= now]

    def _page(self, after: int) -> list[StoredEvent]:
        with self._uow.read() as uow:
            return uow.audit.after(after, self._settings.batch)

    async def deliver(self, webhook: Webhook) -> int:
        """Send this webhook what follows its cursor until it is done or an attempt fails."""
        delivered = 0
        while True:
            page = self._page(webhook.delivered_seq)
            if not page:
                return delivered
            cursor = webhook.delivered_seq
            for stored in page:
                if not webhook.wants(stored.event.kind):
                    cursor = stored.seq
                    continue
                error = await self._send(webhook, stored)
                if error is None:
                    cursor, delivered = stored.seq, delivered + 1
                    continue
                failed = attrs.evolve(
                    webhook, delivered_seq=cursor, attempts=webhook.attempts + 1, last_error=error,
                    next_attempt_at=self._clock.now() + dt.timedelta(seconds=retry_delay(
                        webhook.attempts + 1, self._settings.first_retry, self._settings.max_retry)))
                await self._store.run_writing(self._store.save_webhook_progress, failed, webhook.delivered_seq)
                return delivered
            moved = attrs.evolve(webhook, delivered_seq=cursor, attempts=0, next_attempt_at=None, last_error=None)
            if not await self._store.run_writing(self._store.save_webhook_progress, moved, webhook.delivered_seq):
                return delivered   # redelivered meanwhile: the next round starts from the new cursor
            webhook = moved

    async def _send(self, webhook: Webhook, stored: StoredEvent) -> str | None:
        body = delivery_body(webhook, stored)
        headers = {"Content-Type": "application/json",
                   "Kaccy-Signature": signature_header(webhook.secret, body, int(self._clock.now().timestamp())),
                   "Kaccy-Delivery-Id": webhook.delivery_id(stored.seq)}
        try:
            status = await self._transport.post(webhook.url, body, headers)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except WebhookUnreachable as exc:
            error = str(exc) or "no answer"
        if self.on_attempt is not None:
            self.on_attempt(webhook.webhook_id, error is None)
        return error


async def run_deliveries(deliver: DeliverWebhooks, stop: asyncio.Event, interval: float = 0.25,
                         on_error: Callable[[BaseException], Any] | None = None) -> None:
    """Every `interval` seconds until `stop` is set, start delivering to each due webhook that is
    not being delivered to already: a slow receiver holds up only its own webhook. A failure is
    reported and the webhook is tried again next time."""
    running: dict[str, asyncio.Task[int]] = {}

    def finished(task: asyncio.Task[int]) -> None:
        if not task.cancelled() and task.exception() is not None and on_error is not None:
            on_error(task.exception())   # type: ignore[arg-type]

    try:
        await _deliver_until(deliver, stop, interval, running, finished, on_error)
        pending = [t for t in running.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=15)
    finally:
        for task in running.values():
            task.cancel()


async def _deliver_until(deliver: DeliverWebhooks, stop: asyncio.Event, interval: float,
                         running: dict[str, asyncio.Task[int]], finished: Callable[[asyncio.Task[int]], None],
                         on_error: Callable[[BaseException], Any] | None) -> None:
    while not stop.is_set():
        try:
            for webhook in deliver.due():
                task = running.get(webhook.webhook_id)
                if task is None or task.done():
                    running[webhook.webhook_id] = task = asyncio.create_task(deliver.deliver(webhook))
                    task.add_done_callback(finished)
        except Exception as exc:  # noqa: BLE001 - the loop outlives a database hiccup
            if on_error is not None:
                on_error(exc)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
