"""Layer-2 pegs: `/v1/pegs/...` mirrors `kaccy-bitcoin peg ...` (the same JSON; docs/l2.md)."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.routes.base import READ, Call, route


@route("GET", "/v1/pegs/accounts", "Our Stacks and RSK accounts, from the software signer's seed (`peg accounts`)",
       tag="pegs", scopes=(READ,))
async def peg_accounts(call: Call) -> dict[str, Any]:
    accounts = await call.use("peg_accounts")
    return await accounts()
