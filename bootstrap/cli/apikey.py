"""`kaccy-bitcoin apikey`: HTTP API keys."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "apikey"


def register(sub: Any) -> None:
    apikey = actions(sub.add_parser(NAME, help="HTTP API keys"))
    ak = apikey.add_parser("create", help="a new key (printed once; only its hash is stored)")
    ak.add_argument("--scope", action="append", required=True, dest="scopes",
                    choices=["read", "orders", "withdraw", "admin"])
    apikey.add_parser("list", help="every key: id, scopes, created, revoked (never the secret)")
    revoke = apikey.add_parser("revoke", help="refuse a key from now on (within 10 s in a running service)")
    revoke.add_argument("key_id")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "create":
        create = await service(c, "create_api_key")
        return create(args.scopes)
    keys = await service(c, "manage_api_keys")
    return keys.list() if args.action == "list" else keys.revoke(args.key_id)
