"""Lightning channel management (admin): open a channel to a peer, close one. Listing them is
`GET /v1/lightning/channels` (routes/lightning.py)."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.fields import BY, MAX_SAT, NODE_URI, Flag, Integer
from kaccy_bitcoin.adapters.http_api.routes.base import ADMIN, Call, Created, _obj, operator, route


@route("POST", "/v1/lightning/channels", "Open a channel to a peer (the CLI's `ln channel open`; audited)",
       tag="lightning", scopes=(ADMIN,), idempotency="optional", status=201,
       body=_obj(["node", "local_sat"], node=NODE_URI,
                 local_sat=Integer(low=20_000, high=MAX_SAT, code="invalid_amount",
                                   description="the channel's size, from the node's wallet"),
                 push_sat=Integer(low=0, high=MAX_SAT, code="invalid_amount", description="given to the peer"),
                 fee_rate=Integer(low=1, high=100_000, code="invalid_amount",
                                  description="the funding transaction's fee rate, whole sat/vB (default: LND's "
                                              "estimate)"),
                 by=BY))
async def open_channel(call: Call) -> Created:
    b = call.body
    opening = await call.use("open_channel")
    return Created(await opening(b["node"], b["local_sat"], b["push_sat"] or 0, b["fee_rate"], operator(call)))


@route("POST", "/v1/lightning/channels/{channel_point}/close", "Close a channel, cooperatively or with `force` "
       "(the CLI's `ln channel close`; audited)", tag="lightning", scopes=(ADMIN,), idempotency="optional",
       body=_obj([], force=Flag(description="close unilaterally (our funds wait for the CSV delay)"), by=BY))
# No path pattern on {channel_point}: a malformed one is the use case's typed 400
# (invalid_lightning_value), as on the command line, not a bare 404.
async def close_channel(call: Call) -> dict[str, Any]:
    close = await call.use("close_channel")
    return await close(call.path("channel_point"), bool(call.body["force"]), operator(call))
