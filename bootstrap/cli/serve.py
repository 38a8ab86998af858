"""`kaccy-bitcoin serve`: the HTTP API, the payment monitor and webhook deliveries in one process."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from kaccy_bitcoin.bootstrap.cli.common import UsageError, int_in_range, seconds

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

NAME = "serve"


def register(sub: Any) -> None:
    options(sub.add_parser(NAME, help="the HTTP API, the payment monitor and webhook deliveries in one process"))


def options(p: argparse.ArgumentParser) -> None:
    """The options of `serve` (and of `run`, which serves after its demo)."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int_in_range("--port", 0, 65535), default=8080,
                   help="port to listen on (default 8080; 0: any free port)")
    p.add_argument("--no-api", action="store_true", help="do not serve HTTP")
    p.add_argument("--no-monitor", action="store_true", help="do not poll the node (another process does)")
    p.add_argument("--no-webhooks", action="store_true", help="do not deliver webhooks (another process does)")
    p.add_argument("--interval", type=seconds("--interval"), default=None,
                   help="seconds between monitor polls (default KACCY_POLL_INTERVAL, 30)")
    p.add_argument("--workers", type=int_in_range("--workers", 1, 64), default=1,
                   help="API processes sharing the port (default 1); only this one runs the monitor and webhooks")
    p.add_argument("--onion", action="store_true",
                   help="also publish the API as a Tor onion service through tor's control port "
                        "(KACCY_TOR_CONTROL, default 127.0.0.1:9051); the address stays across restarts")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def chosen(args: argparse.Namespace) -> Any:
    """The ServeOptions the arguments ask for."""
    from kaccy_bitcoin.bootstrap.serve import ServeOptions

    if args.onion and args.no_api:
        raise UsageError("--onion publishes the HTTP API: it cannot go with --no-api")
    return ServeOptions(host=args.host, port=args.port, api=not args.no_api, monitor=not args.no_monitor,
                        webhooks=not args.no_webhooks, interval=args.interval, workers=args.workers,
                        reuse_port=args.reuse_port, onion=args.onion)


async def run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    from kaccy_bitcoin.bootstrap.serve import serve

    return await serve(c, chosen(args))
