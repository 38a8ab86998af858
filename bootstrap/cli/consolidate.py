"""`kaccy-bitcoin consolidate`: merge small coins into one while fees are low."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions, fee_rate, int_in_range, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "consolidate"


def register(sub: Any) -> None:
    consolidate = actions(sub.add_parser(NAME, help="merge small coins into one while fees are low"))
    for name, text in (("plan", "the coins to merge, the fee now and the saving against the long-term fee rate"),
                       ("run", "plan, then sign and broadcast the consolidation to our own change chain")):
        cp = consolidate.add_parser(name, help=text)
        cp.add_argument("--wallet", default="default")
        cp.add_argument("--max-inputs", type=int_in_range("--max-inputs", 1, 10_000), default=None,
                        help="merge at most this many coins, the smallest first (default 200)")
        cp.add_argument("--fee-rate", type=fee_rate, default=None, help="sat/vB (default: the node's estimate)")
        if name == "run":
            cp.add_argument("--signer", choices=["software", "hwi", "core"], default="software")
    consolidate.add_parser("status", help="the wallet's consolidation machine").add_argument(
        "--wallet", default="default")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "plan":
        plan = await service(c, "plan_consolidation")
        return await plan(args.wallet, args.max_inputs, args.fee_rate)
    if args.action == "run":
        run_it = await service(c, "run_consolidation")
        return await run_it(args.wallet, args.max_inputs, args.fee_rate, args.signer)
    show = await service(c, "show_consolidation")
    return await show(args.wallet)
