"""`kaccy-bitcoin monitor`: one poll (`--once`), or the monitors until stopped."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import seconds, service

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "monitor"


def register(sub: Any) -> None:
    monitor = sub.add_parser(NAME, help="poll the node for payments")
    monitor.add_argument("--once", action="store_true", help="one poll, print its events, exit")
    monitor.add_argument("--interval", type=seconds("--interval"), default=None,
                         help="seconds between polls (default KACCY_POLL_INTERVAL, 30)")


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    import asyncio
    import signal

    if args.once:
        from kaccy_bitcoin.bootstrap.tuning import GcPausedDuring

        poll = GcPausedDuring(await service(c, "monitor_tick"))
        events = await poll()   # a failed phase raises MonitorPollFailed (exit 1); a failed item is listed
        return {"events": [e.to_dict() for e in events], "failed": [f.to_dict() for f in getattr(events, "failed", ())]}
    from kaccy_bitcoin.bootstrap.monitoring import run_monitors

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    count = 0

    def say(line: dict[str, Any]) -> None:
        print(json.dumps(line), file=sys.stderr, flush=True)

    def show(events: list) -> None:  # noqa: ANN001
        nonlocal count
        count += len(events)
        for e in events:
            say(e.to_dict())

    # Of the processes sharing the database, one runs the monitors; the others wait as standbys.
    await run_monitors(c, stop, interval=args.interval, say=say, on_events=show, own_process=True)
    return {"stopped": True, "events_seen": count}
