"""`kaccy-bitcoin order`: deposit orders."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions, positive_int, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "order"


def register(sub: Any) -> None:
    order = actions(sub.add_parser(NAME, help="deposit orders"))
    create = order.add_parser("create", help="create an order and its deposit address")
    create.add_argument("order_id")
    create.add_argument("--amount-sat", required=True, type=positive_int("--amount-sat"))
    create.add_argument("--expires-in", type=positive_int("--expires-in"), default=None)
    create.add_argument("--label", default="")
    create.add_argument("--wallet", default=None, help="the wallet of the deposit address (default: default)")
    show = order.add_parser("show", help="show an order's payment status")
    show.add_argument("order_id")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "create":
        from kaccy_bitcoin.domain.money import Satoshis

        create = await service(c, "create_order")
        return await create(args.order_id, Satoshis(args.amount_sat), expires_in=args.expires_in,
                            label=args.label, wallet=args.wallet)
    show = await service(c, "show_order")
    return (await show(args.order_id)).to_dict()
