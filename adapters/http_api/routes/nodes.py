"""The Bitcoin nodes behind the service (several nodes: which is primary, which agree)."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.routes.base import READ, Call, route


@route("GET", "/v1/nodes", "The Bitcoin nodes, checked now: state (primary, standby, down, lagging, diverged), "
       "height, best block hash, latency and version; urls without credentials", tag="nodes", scopes=(READ,))
async def list_nodes(call: Call) -> dict[str, Any]:
    show = await call.use("show_nodes")
    return await show()
