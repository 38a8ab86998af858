"""`kaccy-bitcoin run`: the main job: a local regtest node, a guided demo, then the service."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli import serve

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "run"


def register(sub: Any) -> None:
    run_it = sub.add_parser(NAME, help="the main job: a local regtest node, a guided demo, then the service")
    run_it.add_argument("--no-demo", action="store_true")
    serve.options(run_it)


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    from kaccy_bitcoin.bootstrap.service import run_service

    return await run_service(c, serve.chosen(args), demo=not args.no_demo)
