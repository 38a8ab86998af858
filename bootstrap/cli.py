"""The `kaccy-bitcoin` command line.

Every command prints exactly one JSON object on stdout and exits 0; on bad input or
a failure it prints {"error": {"code": ..., "message": ...}} and exits non-zero
(2: the input was wrong, 1: something outside failed). Each command is its own
process: everything lives in the database between them.
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import signal
import sys
from typing import Any, Awaitable, Callable, NoReturn

from kaccy_bitcoin.adapters.bitcoin_core.errors import BitcoinCoreError
from kaccy_bitcoin.bootstrap import config as config_module
from kaccy_bitcoin.bootstrap.container import Container, build
from kaccy_bitcoin.bootstrap.tuning import GcPausedDuring, freeze_startup_objects
from kaccy_bitcoin.domain.errors import DomainError
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.ports.signer import SignerError


class UsageError(Exception):
    code = "usage"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}")
        return int(text)
    return parse


def _signed_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number of sat, got {text!r}") from None
    return parse


def _fee_rate(text: str) -> FeeRate:
    try:
        return FeeRate.from_sat_per_vb(text)
    except DomainError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kaccy-bitcoin", description="Bitcoin payments for the Kaccy Protocol.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    order = sub.add_parser("order", help="deposit orders").add_subparsers(dest="action", required=True,
                                                                          parser_class=_Parser)
    create = order.add_parser("create", help="create an order and its deposit address")
    create.add_argument("order_id")
    create.add_argument("--amount-sat", required=True, type=_positive_int("--amount-sat"))
    create.add_argument("--expires-in", type=_positive_int("--expires-in"), default=None)
    create.add_argument("--label", default="")
    show = order.add_parser("show", help="show an order's payment status")
    show.add_argument("order_id")

    monitor = sub.add_parser("monitor", help="poll the node for payments")
    monitor.add_argument("--once", action="store_true", help="one poll, print its events, exit")
    monitor.add_argument("--interval", type=float, default=None, help="seconds between polls (default 30)")

    addresses = sub.add_parser("addresses", help="the address book").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    export = addresses.add_parser("export", help="write every address and label as BIP329 JSONL")
    export.add_argument("--output", required=True)

    withdraw = sub.add_parser("withdraw", help="money going out (PSBT withdrawals)").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    wc = withdraw.add_parser("create", help="select coins and build an unsigned PSBT")
    wc.add_argument("--to", action="append", required=True, dest="to")
    wc.add_argument("--amount-sat", action="append", required=True, dest="amounts", type=_signed_int("--amount-sat"))
    wc.add_argument("--fee-rate", type=_fee_rate, default=None, help="sat/vB (default: the node's estimate)")
    ws = withdraw.add_parser("sign", help="add signatures")
    ws.add_argument("withdrawal_id")
    ws.add_argument("--signer", required=True, choices=["software", "hwi", "core"])
    for name, text in (("broadcast", "finalize, check with the mempool, and send"),
                       ("cancel", "reject a withdrawal that is not broadcast and release its coins"),
                       ("show", "show a withdrawal")):
        withdraw.add_parser(name, help=text).add_argument("withdrawal_id")
    wb = withdraw.add_parser("bump", help="replace a broadcast withdrawal with a higher fee (RBF)")
    wb.add_argument("withdrawal_id")
    wb.add_argument("--fee-rate", type=_fee_rate, required=True)
    wb.add_argument("--to", action="append", default=[], dest="to", help="batch RBF: another payout to add")
    wb.add_argument("--amount-sat", action="append", default=[], dest="amounts", type=_signed_int("--amount-sat"))
    wp = withdraw.add_parser("cpfp", help="lift a stuck broadcast withdrawal with a child spending its change")
    wp.add_argument("withdrawal_id")
    wp.add_argument("--fee-rate", type=_fee_rate, required=True, help="target rate for parent and child together")

    run = sub.add_parser("run", help="the main job: a local regtest node, a guided demo, then the monitor")
    run.add_argument("--no-demo", action="store_true")
    return p


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


async def _service(container: Container, name: str) -> Any:
    provided = getattr(container.services, name)()
    return await provided if inspect.isawaitable(provided) else provided


async def cmd_order(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "create":
        create = await _service(c, "create_order")
        return await create(args.order_id, Satoshis(args.amount_sat), expires_in=args.expires_in,
                            label=args.label)
    show = await _service(c, "show_order")
    view = (await show(args.order_id)).to_dict()
    return view


async def cmd_monitor(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    poll = GcPausedDuring(await _service(c, "monitor_tick"))
    if args.once:
        events = await poll()
        return {"events": [e.to_dict() for e in events]}
    from kaccy_bitcoin.application.monitor import RunMonitor

    interval = args.interval if args.interval is not None else c.config.poll_interval()
    freeze_startup_objects()
    runner = RunMonitor(poll, interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    count = 0

    def show(events: list) -> None:  # noqa: ANN001
        nonlocal count
        count += len(events)
        for e in events:
            print(json.dumps(e.to_dict()), file=sys.stderr, flush=True)

    await runner(on_events=show, stop=stop)
    return {"stopped": True, "events_seen": count}


async def cmd_withdraw(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "create":
        if len(args.to) != len(args.amounts):
            raise UsageError("give one --amount-sat for every --to")
        create = await _service(c, "create_withdrawal")
        return await create(list(zip(args.to, args.amounts)), args.fee_rate)
    if args.action == "sign":
        sign = await _service(c, "sign_withdrawal")
        return await sign(args.withdrawal_id, args.signer)
    if args.action == "bump":
        if len(args.to) != len(args.amounts):
            raise UsageError("give one --amount-sat for every --to")
        bump = await _service(c, "bump_withdrawal")
        return await bump(args.withdrawal_id, args.fee_rate, list(zip(args.to, args.amounts)))
    if args.action == "cpfp":
        cpfp = await _service(c, "cpfp_withdrawal")
        return await cpfp(args.withdrawal_id, args.fee_rate)
    use_case = await _service(c, f"{args.action}_withdrawal")
    return await use_case(args.withdrawal_id)


async def cmd_addresses(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    uow_factory = c.storage.uow()
    with uow_factory() as uow:
        entries = uow.addresses.entries()
    with open(args.output, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(entry.bip329() + "\n")
    return {"path": args.output, "count": len(entries)}


async def cmd_run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    from kaccy_bitcoin.bootstrap.service import run_service

    return await run_service(c, demo=not args.no_demo)


COMMANDS: dict[str, Callable[[argparse.Namespace, Container], Awaitable[dict[str, Any]]]] = {
    "order": cmd_order, "monitor": cmd_monitor, "addresses": cmd_addresses, "run": cmd_run,
    "withdraw": cmd_withdraw,
}


def _error(code: str, message: str, status: int) -> int:
    emit({"error": {"code": code, "message": message}})
    return status


async def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    container = build(config_module.load())
    if container.config.signer_mnemonic():
        container.gateways.software_signer()   # refuses to start on words for another account
    try:
        result = await COMMANDS[args.command](args, container)
    finally:
        shutdown = container.shutdown_resources()
        if inspect.isawaitable(shutdown):
            await shutdown
    emit(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]) or not argv:
        parser().print_help(sys.stdout)
        return 0 if argv else 2
    try:
        return asyncio.run(_main(argv))
    except UsageError as exc:
        return _error("usage", str(exc), 2)
    except (DomainError, config_module.ConfigError) as exc:
        return _error(getattr(exc, "code", "invalid"), str(exc), 2)
    except BitcoinCoreError as exc:
        return _error(exc.code, str(exc), 1)
    except SignerError as exc:
        return _error(exc.code, str(exc), 1)
    except KeyboardInterrupt:
        return _error("interrupted", "stopped by the user", 130)
    except Exception as exc:  # noqa: BLE001 - the boundary: report, never a traceback on stdout
        logging.getLogger("kaccy_bitcoin").exception("unexpected failure")
        return _error("internal", f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
