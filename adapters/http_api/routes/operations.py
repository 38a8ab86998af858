"""Operations (no key): the dashboard, health, readiness, metrics, this document."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.routes.base import ROUTES, Call, route


@route("GET", "/dashboard", "The operator's dashboard (a web page; it asks for an admin key and reads this API "
       "with it)", tag="operations", scopes=None, content_type="text/html")
async def dashboard(call: Call) -> Any:
    from importlib import resources

    from aiohttp import web

    page = resources.files("kaccy_bitcoin.adapters.http_api").joinpath("dashboard.html").read_text("utf-8")
    return web.Response(text=page, content_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy":
                                 "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                 "connect-src 'self' ws: wss:"})


@route("GET", "/health", "Liveness: the process answers", tag="operations", scopes=None)
async def health(call: Call) -> dict[str, Any]:
    return {"status": "ok"}


@route("GET", "/ready", "Readiness: node reachable and synced, LND (when configured) synced to the chain, database "
       "writable, monitor not lagging; 503 when a check fails", tag="operations", scopes=None,
       answers={503: "a check failed: the same report, the failing check named"})
async def ready(call: Call) -> Any:
    return await call.api.readiness()


@route("GET", "/metrics", "Prometheus metrics (text format)", tag="operations", scopes=None,
       content_type="text/plain")
async def metrics(call: Call) -> Any:
    await call.api.observe_nodes()
    return call.api.metrics.response()


@route("GET", "/openapi.json", "This document", tag="operations", scopes=None)
async def openapi(call: Call) -> Any:
    from kaccy_bitcoin.adapters.http_api.openapi import document

    return document(ROUTES)
