"""The address book."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.fields import Integer
from kaccy_bitcoin.adapters.http_api.routes.base import READ, Call, route


@route("GET", "/v1/addresses", "The address book as BIP329 records, by chain and index, paged",
       tag="addresses", scopes=(READ,),
       query={"offset": Integer(low=0, high=2**31, default=0), "limit": Integer(high=1000, default=100)})
async def list_addresses(call: Call) -> dict[str, Any]:
    listing = await call.use("list_addresses")
    return await listing(offset=call.args["offset"], limit=call.args["limit"])
