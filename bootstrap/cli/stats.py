"""`kaccy-bitcoin stats`: volumes in and out, fees paid, confirmation time, coins per wallet."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "stats"


def register(sub: Any) -> None:
    sub.add_parser(NAME, help="volumes in and out, fees paid, confirmation time, coins per wallet")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    stats = await service(c, "stats")
    return await stats()
