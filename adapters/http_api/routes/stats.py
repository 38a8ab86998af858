"""What came in and went out: the CLI's `stats`, and the money per day of the last 30 days
(as JSON and as the dashboard's SVG chart)."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.routes.base import READ, WITHDRAW, Call, route


@route("GET", "/v1/stats", "Volumes, fees, confirmation time and each wallet's coins (the CLI's `stats`)",
       tag="stats", scopes=(READ, WITHDRAW))
async def show_stats(call: Call) -> dict[str, Any]:
    stats = await call.use("stats")
    return await stats()


@route("GET", "/v1/stats/daily", "Money in and out per UTC day over the last 30 days, oldest first",
       tag="stats", scopes=(READ, WITHDRAW))
async def daily_flows(call: Call) -> dict[str, Any]:
    flows = await call.use("daily_flows")
    return await flows()


@route("GET", "/v1/stats/daily.svg", "The same as a bar chart (SVG drawn on the server; each bar's numbers as "
       "data attributes)", tag="stats", scopes=(READ, WITHDRAW), content_type="image/svg+xml")
async def daily_flows_chart(call: Call) -> Any:
    from aiohttp import web

    from kaccy_bitcoin.adapters.http_api.charts import daily_flows_svg

    flows = await call.use("daily_flows")
    return web.Response(text=daily_flows_svg(await flows()), content_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})
