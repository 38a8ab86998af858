"""Webhook subscriptions and redelivery."""
from __future__ import annotations

import asyncio
from typing import Any

from kaccy_bitcoin.adapters.http_api.fields import EVENTS_AFTER, Choice, Integer, ListOf, Text
from kaccy_bitcoin.adapters.http_api.routes.base import ADMIN, Call, Created, _obj, route
from kaccy_bitcoin.domain.api_access import WEBHOOK_URL_MAX, WEBHOOK_URL_PATTERN
from kaccy_bitcoin.domain.events import EVENT_KINDS


@route("POST", "/v1/webhooks", "Subscribe a URL to events (all kinds, or those listed); the secret is shown once",
       tag="webhooks", scopes=(ADMIN,), idempotency="optional", status=201,
       body=_obj(["url"], url=Text(min_length=1, max_length=WEBHOOK_URL_MAX, format="uri",
                                   pattern=WEBHOOK_URL_PATTERN, code="invalid_webhook"),
                 events=ListOf(item=Choice(values=tuple(sorted(EVENT_KINDS)), code="invalid_webhook"),
                               high=len(EVENT_KINDS), code="invalid_webhook",
                               description="event kinds (default: every kind)")))
async def create_webhook(call: Call) -> Created:
    url, events = call.body["url"], call.body["events"]
    register = await call.use("register_webhook")
    return Created(await register(url, events, call.key.key_id if call.key else ""))


@route("GET", "/v1/webhooks", "Every active webhook and its delivery state", tag="webhooks", scopes=(ADMIN,))
async def list_webhooks(call: Call) -> dict[str, Any]:
    return (await call.use("show_webhooks")).all()


@route("GET", "/v1/webhooks/{webhook_id}", "A webhook's delivery state", tag="webhooks", scopes=(ADMIN,))
async def show_webhook(call: Call) -> dict[str, Any]:
    return (await call.use("show_webhooks")).one(call.path("webhook_id"))


@route("DELETE", "/v1/webhooks/{webhook_id}", "Stop delivering to a webhook", tag="webhooks", scopes=(ADMIN,))
async def delete_webhook(call: Call) -> dict[str, Any]:
    # It writes (may wait for the database's write lock): in a thread, never on the event loop.
    return await asyncio.to_thread((await call.use("show_webhooks")).delete, call.path("webhook_id"))


@route("POST", "/v1/webhooks/{webhook_id}/redeliver",
       "Send again every event from `from_seq` on (same delivery ids), now", tag="webhooks", scopes=(ADMIN,),
       body=_obj(["from_seq"], from_seq=Integer(high=EVENTS_AFTER.high)))
async def redeliver_webhook(call: Call) -> dict[str, Any]:
    from_seq = call.body["from_seq"]
    redeliver = await call.use("redeliver_webhook")
    return await asyncio.to_thread(redeliver, call.path("webhook_id"), from_seq)   # it writes, as above
