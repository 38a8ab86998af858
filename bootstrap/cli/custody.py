"""`kaccy-bitcoin custody`: tiered custody (KACCY_CUSTODY_TIERS)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "custody"


def register(sub: Any) -> None:
    custody = actions(sub.add_parser(NAME, help="tiered custody (KACCY_CUSTODY_TIERS)"))
    custody.add_parser("status", help="each tier's balance against its target share, and the sweep or "
                                      "refill that would restore it")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    status = await service(c, "custody_status")
    return await status()
