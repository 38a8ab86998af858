"""`kaccy-bitcoin wallet`: named wallets: single-sig default and M-of-N multisig."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions, positive_int, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "wallet"


def register(sub: Any) -> None:
    wallet = actions(sub.add_parser(NAME, help="named wallets: single-sig default and M-of-N multisig"))
    wa = wallet.add_parser("add", help="add a P2WSH wsh(sortedmulti(M, ...)) wallet of BIP48 cosigner keys")
    wa.add_argument("name")
    wa.add_argument("--threshold", required=True, type=positive_int("--threshold"))
    wa.add_argument("--by", default="operator", help="the operator adding it (for the audit trail)")
    wa.add_argument("--key", action="append", required=True, dest="keys",
                    help="a cosigner's key with its origin: [fingerprint/48h/1h/0h/2h]tpub...")
    wallet.add_parser("list", help="every wallet, its policy and balance")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "add":
        add = await service(c, "add_wallet")
        return await add(args.name, args.threshold, args.keys, by=args.by)
    listing = await service(c, "list_wallets")
    return await listing()
