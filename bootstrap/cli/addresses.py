"""`kaccy-bitcoin addresses`: the address book."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "addresses"


def register(sub: Any) -> None:
    addresses = actions(sub.add_parser(NAME, help="the address book"))
    export = addresses.add_parser("export", help="write every address and label as BIP329 JSONL")
    export.add_argument("--output", required=True)


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    uow_factory = c.storage.uow()
    with uow_factory.read() as uow:
        entries = uow.addresses.entries()
    with open(args.output, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(entry.bip329() + "\n")
    return {"path": args.output, "count": len(entries)}
