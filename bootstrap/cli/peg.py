"""`kaccy-bitcoin peg`: Bitcoin layer-2s, sBTC on Stacks and RBTC on Rootstock (docs/l2.md)."""
from __future__ import annotations

import argparse
from typing import Any

from kaccy_bitcoin.bootstrap.cli.common import actions, service

NAME = "peg"


def register(subparsers: Any) -> None:
    peg = actions(subparsers.add_parser(NAME, help="layer-2 pegs: sBTC on Stacks, RBTC on Rootstock"))
    peg.add_parser("accounts", help="our Stacks and RSK accounts (from the software signer's seed)")


async def run(args: argparse.Namespace, container: Any) -> dict[str, Any]:
    """Runs one `peg` command: the container's use case its action names."""
    use = await service(container, f"peg_{args.action}")
    return await use()
