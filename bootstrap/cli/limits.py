"""`kaccy-bitcoin limits`: withdrawal limits."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import actions, positive_int, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "limits"


def register(sub: Any) -> None:
    limits = actions(sub.add_parser(NAME, help="withdrawal limits"))
    ls = limits.add_parser("set", help="set a user's limits (rolling hour, 24 h, 30 days, one withdrawal) "
                                       "or the platform's daily limit; options not given keep their value")
    ls.add_argument("--user", default=None)
    for flag in ("--daily-sat", "--monthly-sat", "--single-max-sat", "--hourly-sat", "--platform-daily-sat"):
        ls.add_argument(flag, type=positive_int(flag), default=None)
    ls.add_argument("--by", default="operator", help="the operator setting them (for the audit trail)")
    limits.add_parser("show", help="the stored limits").add_argument("--user", default=None)


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "show":
        return await (await service(c, "show_limits"))(args.user)
    set_limits = await service(c, "set_limits")
    return await set_limits(args.user, daily_sat=args.daily_sat, monthly_sat=args.monthly_sat,
                            single_max_sat=args.single_max_sat, hourly_sat=args.hourly_sat,
                            platform_daily_sat=args.platform_daily_sat, by=args.by)
