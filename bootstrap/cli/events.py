"""`kaccy-bitcoin events`: committed events after a cursor, oldest first (the outbox)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import int_in_range, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "events"


def register(sub: Any) -> None:
    from kaccy_bitcoin.application.event_limits import MAX_LIMIT, MAX_SEQ

    events = sub.add_parser(NAME, help="committed events after a cursor, oldest first (the outbox)")
    events.add_argument("--after", type=int_in_range("--after", 0, MAX_SEQ), default=0,
                        help="the seq to read after: 0, or the `next` of the previous answer")
    events.add_argument("--limit", type=int_in_range("--limit", 1, MAX_LIMIT), default=100,
                        help=f"at most this many events (1 to {MAX_LIMIT}, default 100)")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    list_events = await service(c, "list_events")
    return await list_events(args.after, args.limit)
