"""The outbox: committed events after a cursor, and their WebSocket stream."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.fields import EVENTS_AFTER, EVENTS_LIMIT
from kaccy_bitcoin.adapters.http_api.routes.base import READ, Call, route


@route("GET", "/v1/events", "Committed events after a cursor, oldest first (the outbox)", tag="events",
       scopes=(READ,), query={"after": EVENTS_AFTER, "limit": EVENTS_LIMIT})
async def list_events(call: Call) -> dict[str, Any]:
    page = await call.use("list_events")
    return await page(call.args["after"], call.args["limit"])


@route("GET", "/v1/events/ws", "WebSocket: every event after `after` as one JSON text message, then live",
       tag="events", scopes=(READ,), query={"after": EVENTS_AFTER}, websocket=True)
async def event_stream(call: Call) -> Any:
    return await call.api.stream_events(call.request, call.args["after"])
