"""GET /v1/pegs/accounts over real HTTP (`serve`) answers what `peg accounts` prints."""
from __future__ import annotations

import aiohttp
import pytest

from tests.payments_harness import Shop
from tests.service_harness import Client, Service, api_key, service_env

pytestmark = pytest.mark.node


async def test_peg_accounts_route_mirrors_the_cli(node, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path)
    shop.env["KACCY_SIGNER_MNEMONIC"] = shop.words
    shop.cli("db", "upgrade")
    _, printed = shop.cli("peg", "accounts")
    env = service_env(shop.env)
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await Client(session, service.url, api_key(env, "read")).get("/v1/pegs/accounts")
            assert status == 200 and body == printed, body
            assert body["stacks"]["address"].startswith("ST") and body["rsk"]["address"].startswith("0x")
            status, _ = await Client(session, service.url, None).get("/v1/pegs/accounts")
            assert status == 401
    finally:
        service.stop()
