"""`kaccy-bitcoin nodes`: every configured Bitcoin node, its state, tip, latency and version."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "nodes"


def register(sub: Any) -> None:
    sub.add_parser(NAME, help="the Bitcoin nodes: primary, standby, down, lagging or diverged, with their tips")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    show = await service(c, "show_nodes")
    return await show()
