"""The `kaccy-bitcoin` command line.

Every command prints exactly one JSON object on stdout and exits 0; on bad input or
a failure it prints {"error": {"code": ..., "message": ...}} and exits non-zero
(2: the input was wrong, 1: something outside failed; an error may say otherwise with an
`exit_status`). No traceback is printed unless `--debug` asks for one, and no URL shows
its user:password. Each command is its own process: everything lives in the database
between them, and every command but `db upgrade` refuses a database whose schema is
not this release's.

Start-up time: a command imports what it uses when it runs, nothing at the top of this
module but the standard library and two dependency-free error modules; `--help` and a
usage error load no library at all (bench/startup.py, tests/test_startup_imports.py).
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NoReturn

from kaccy_bitcoin.adapters.bitcoin_core.errors import redact_credentials
from kaccy_bitcoin.bootstrap import cli_swap
from kaccy_bitcoin.domain.errors import DomainError

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container
    from kaccy_bitcoin.domain.money import FeeRate


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


def _int_in_range(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        digits = text.strip()
        value = int(digits) if digits.isascii() and digits.isdigit() else None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number from {low} to {high}, got {text!r}")
        return value
    return parse


def _seconds(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a positive number of seconds, got {text!r}")
        return value
    return parse


def _fee_rate(text: str) -> FeeRate:
    from kaccy_bitcoin.domain.money import FeeRate

    try:
        return FeeRate.from_sat_per_vb(text)
    except DomainError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(text: str):  # noqa: ANN202
    import datetime as dt

    try:
        if text.strip().replace(".", "", 1).isdigit():
            return dt.datetime.fromtimestamp(float(text), dt.timezone.utc)
        value = dt.datetime.fromisoformat(text.strip())
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"--since must be an ISO 8601 time or Unix seconds, got {text!r}") from None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def parser() -> argparse.ArgumentParser:
    from kaccy_bitcoin.application.event_limits import MAX_LIMIT as EVENTS_MAX_LIMIT, MAX_SEQ

    p = _Parser(prog="kaccy-bitcoin", description="Bitcoin payments for the Kaccy Protocol.")
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error on stderr")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    order = sub.add_parser("order", help="deposit orders").add_subparsers(dest="action", required=True,
                                                                          parser_class=_Parser)
    create = order.add_parser("create", help="create an order and its deposit address")
    create.add_argument("order_id")
    create.add_argument("--amount-sat", required=True, type=_positive_int("--amount-sat"))
    create.add_argument("--expires-in", type=_positive_int("--expires-in"), default=None)
    create.add_argument("--label", default="")
    create.add_argument("--wallet", default=None, help="the wallet of the deposit address (default: default)")
    show = order.add_parser("show", help="show an order's payment status")
    show.add_argument("order_id")

    monitor = sub.add_parser("monitor", help="poll the node for payments")
    monitor.add_argument("--once", action="store_true", help="one poll, print its events, exit")
    monitor.add_argument("--interval", type=_seconds("--interval"), default=None,
                         help="seconds between polls (default KACCY_POLL_INTERVAL, 30)")

    addresses = sub.add_parser("addresses", help="the address book").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    export = addresses.add_parser("export", help="write every address and label as BIP329 JSONL")
    export.add_argument("--output", required=True)

    withdraw = sub.add_parser("withdraw", help="money going out (PSBT withdrawals)").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    wc = withdraw.add_parser("create", help="select coins and build an unsigned PSBT")
    wc.add_argument("--amount-sat", action="append", required=True, dest="amounts", type=_signed_int("--amount-sat"))
    wc.add_argument("--to", action="append", default=[], dest="to")
    wc.add_argument("--to-wallet", action="append", default=[], dest="to_wallets",
                    help="pay a fresh receive address of this wallet of ours (a sweep or refill)")
    wc.add_argument("--fee-rate", type=_fee_rate, default=None, help="sat/vB (default: the node's estimate)")
    wc.add_argument("--user", default=None, help="whose withdrawal: checked against their limits, reviewed "
                                                 "against their history")
    wc.add_argument("--wallet", default=None,
                    help="the wallet to pay from (default: the custody tier of the amount, else default)")
    ws = withdraw.add_parser("sign", help="add signatures")
    ws.add_argument("withdrawal_id")
    ws.add_argument("--signer", required=True, choices=["software", "hwi", "core"])
    wm = withdraw.add_parser("combine", help="merge signatures made elsewhere (another cosigner, Sparrow, "
                                             "a node's walletprocesspsbt)")
    wm.add_argument("withdrawal_id")
    wm.add_argument("--psbt", required=True, help="the base64 PSBT holding the other signatures")
    for name, text in (("broadcast", "finalize, check with the mempool, and send"),
                       ("show", "show a withdrawal")):
        withdraw.add_parser(name, help=text).add_argument("withdrawal_id")
    wx = withdraw.add_parser("cancel", help="withdraw an unsigned (or held) withdrawal and release its coins")
    wx.add_argument("withdrawal_id")
    wx.add_argument("--by", default="operator", help="the operator cancelling (for the audit trail)")
    wa = withdraw.add_parser("approve", help="release a withdrawal the risk review held")
    wa.add_argument("withdrawal_id")
    wa.add_argument("--by", required=True, help="the operator approving (for the audit trail)")
    wb = withdraw.add_parser("bump", help="replace a broadcast withdrawal with a higher fee (RBF)")
    wb.add_argument("withdrawal_id")
    wb.add_argument("--fee-rate", type=_fee_rate, required=True)
    wb.add_argument("--to", action="append", default=[], dest="to", help="batch RBF: another payout to add")
    wb.add_argument("--amount-sat", action="append", default=[], dest="amounts", type=_signed_int("--amount-sat"))
    wv = withdraw.add_parser("void", help="spend a signed withdrawal's inputs back to our change chain at a "
                                          "higher fee (cancel by double-spend), broadcast at once")
    wv.add_argument("withdrawal_id")
    wv.add_argument("--fee-rate", type=_fee_rate, default=None,
                    help="sat/vB (default: the node's estimate, raised to what BIP125 requires)")
    wv.add_argument("--signer", choices=["software", "hwi", "core"], default="software")
    wv.add_argument("--by", default="operator", help="the operator voiding (for the audit trail)")
    wp = withdraw.add_parser("cpfp", help="lift a stuck broadcast withdrawal with a child spending its change")
    wp.add_argument("withdrawal_id")
    wp.add_argument("--fee-rate", type=_fee_rate, required=True, help="target rate for parent and child together")

    consolidate = sub.add_parser("consolidate", help="merge small coins into one while fees are low").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    for name, text in (("plan", "the coins to merge, the fee now and the saving against the long-term fee rate"),
                       ("run", "plan, then sign and broadcast the consolidation to our own change chain")):
        cp = consolidate.add_parser(name, help=text)
        cp.add_argument("--wallet", default="default")
        cp.add_argument("--max-inputs", type=_int_in_range("--max-inputs", 1, 10_000), default=None,
                        help="merge at most this many coins, the smallest first (default 200)")
        cp.add_argument("--fee-rate", type=_fee_rate, default=None, help="sat/vB (default: the node's estimate)")
        if name == "run":
            cp.add_argument("--signer", choices=["software", "hwi", "core"], default="software")
    consolidate.add_parser("status", help="the wallet's consolidation machine").add_argument(
        "--wallet", default="default")

    sub.add_parser("stats", help="volumes in and out, fees paid, confirmation time, coins per wallet")

    events = sub.add_parser("events", help="committed events after a cursor, oldest first (the outbox)")
    events.add_argument("--after", type=_int_in_range("--after", 0, MAX_SEQ), default=0,
                        help="the seq to read after: 0, or the `next` of the previous answer")
    events.add_argument("--limit", type=_int_in_range("--limit", 1, EVENTS_MAX_LIMIT), default=100,
                        help=f"at most this many events (1 to {EVENTS_MAX_LIMIT}, default 100)")

    limits = sub.add_parser("limits", help="withdrawal limits").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    ls = limits.add_parser("set", help="set a user's limits (rolling hour, 24 h, 30 days, one withdrawal) "
                                       "or the platform's daily limit; options not given keep their value")
    ls.add_argument("--user", default=None)
    for flag in ("--daily-sat", "--monthly-sat", "--single-max-sat", "--hourly-sat", "--platform-daily-sat"):
        ls.add_argument(flag, type=_positive_int(flag), default=None)
    ls.add_argument("--by", default="operator", help="the operator setting them (for the audit trail)")
    limits.add_parser("show", help="the stored limits").add_argument("--user", default=None)

    audit = sub.add_parser("audit", help="the hash-chained audit trail").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    audit.add_parser("verify", help="check every entry's hash and link: {ok, entries, head} or {ok: false, "
                                    "first_bad, ...} (exit 1)")
    aq = audit.add_parser("query", help="entries about a subject and/or since a time, oldest first")
    aq.add_argument("--subject", default=None, help="a withdrawal id, order id, user...")
    aq.add_argument("--since", type=_time, default=None, help="ISO 8601 time (UTC unless it says), or Unix seconds")
    aq.add_argument("--limit", type=_int_in_range("--limit", 1, 100_000), default=1000)

    db = sub.add_parser("db", help="the database").add_subparsers(dest="action", required=True, parser_class=_Parser)
    db.add_parser("upgrade", help="migrate the database to this release's schema (the only command that "
                                  "runs on an older one)")

    ln = sub.add_parser("ln", help="Lightning (LND): invoices for orders, pay out, channels").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    invoice = ln.add_parser("invoice", help="Lightning invoices for orders").add_subparsers(
        dest="invoice_action", required=True, parser_class=_Parser)
    ic = invoice.add_parser("create", help="a BOLT11 invoice the customer can pay the order with")
    ic.add_argument("order_id")
    ic.add_argument("--amount-msat", required=True, type=_int_in_range("--amount-msat", 1, 2_100_000_000_000_000_000))
    ic.add_argument("--expiry", type=_int_in_range("--expiry", 1, 365 * 24 * 3600), default=None,
                    help="seconds the invoice can be paid for (default 3600)")
    invoice.add_parser("show", help="the order's Lightning invoice and its state").add_argument("order_id")
    pay = ln.add_parser("pay", help="pay a BOLT11 payment request and wait for the result")
    pay.add_argument("payment_request")
    pay.add_argument("--max-fee-sat", type=_positive_int("--max-fee-sat"), default=None,
                     help="the most the routing may cost (default 1000 sat)")
    ln.add_parser("channels", help="the node's channels and their balances")

    serve = sub.add_parser("serve", help="the HTTP API, the payment monitor and webhook deliveries in one process")
    _serve_options(serve)

    apikey = sub.add_parser("apikey", help="HTTP API keys").add_subparsers(dest="action", required=True,
                                                                           parser_class=_Parser)
    ak = apikey.add_parser("create", help="a new key (printed once; only its hash is stored)")
    ak.add_argument("--scope", action="append", required=True, dest="scopes",
                    choices=["read", "orders", "withdraw", "admin"])
    apikey.add_parser("list", help="every key: id, scopes, created, revoked (never the secret)")
    revoke = apikey.add_parser("revoke", help="refuse a key from now on (within 10 s in a running service)")
    revoke.add_argument("key_id")

    wallet = sub.add_parser("wallet", help="named wallets: single-sig default and M-of-N multisig").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    wa = wallet.add_parser("add", help="add a P2WSH wsh(sortedmulti(M, ...)) wallet of BIP48 cosigner keys")
    wa.add_argument("name")
    wa.add_argument("--threshold", required=True, type=_positive_int("--threshold"))
    wa.add_argument("--by", default="operator", help="the operator adding it (for the audit trail)")
    wa.add_argument("--key", action="append", required=True, dest="keys",
                    help="a cosigner's key with its origin: [fingerprint/48h/1h/0h/2h]tpub...")
    wallet.add_parser("list", help="every wallet, its policy and balance")

    custody = sub.add_parser("custody", help="tiered custody (KACCY_CUSTODY_TIERS)").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    custody.add_parser("status", help="each tier's balance against its target share, and the sweep or "
                                      "refill that would restore it")

    cli_swap.register(sub)
    run = sub.add_parser("run", help="the main job: a local regtest node, a guided demo, then the service")
    run.add_argument("--no-demo", action="store_true")
    _serve_options(run)
    return p


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_int_in_range("--port", 0, 65535), default=8080,
                   help="port to listen on (default 8080; 0: any free port)")
    p.add_argument("--no-api", action="store_true", help="do not serve HTTP")
    p.add_argument("--no-monitor", action="store_true", help="do not poll the node (another process does)")
    p.add_argument("--no-webhooks", action="store_true", help="do not deliver webhooks (another process does)")
    p.add_argument("--interval", type=_seconds("--interval"), default=None,
                   help="seconds between monitor polls (default KACCY_POLL_INTERVAL, 30)")
    p.add_argument("--workers", type=_int_in_range("--workers", 1, 64), default=1,
                   help="API processes sharing the port (default 1); only this one runs the monitor and webhooks")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


async def _resolved(provided: Any) -> Any:
    """What a provider gave: awaited when it is a coroutine (an async Resource's, or anything
    built from one)."""
    import inspect

    return await provided if inspect.isawaitable(provided) else provided


async def _service(container: Container, name: str) -> Any:
    return await _resolved(getattr(container.services, name)())


async def cmd_order(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "create":
        from kaccy_bitcoin.domain.money import Satoshis

        create = await _service(c, "create_order")
        return await create(args.order_id, Satoshis(args.amount_sat), expires_in=args.expires_in,
                            label=args.label, wallet=args.wallet)
    show = await _service(c, "show_order")
    view = (await show(args.order_id)).to_dict()
    return view


async def cmd_monitor(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    import asyncio
    import signal

    if args.once:
        from kaccy_bitcoin.bootstrap.tuning import GcPausedDuring

        poll = GcPausedDuring(await _service(c, "monitor_tick"))
        events = await poll()
        return {"events": [e.to_dict() for e in events]}
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


async def cmd_withdraw(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "create":
        if not args.to and not args.to_wallets:
            raise UsageError("give at least one --to ADDRESS (or --to-wallet NAME) with its --amount-sat")
        if len(args.to) + len(args.to_wallets) != len(args.amounts):
            raise UsageError("give one --amount-sat for every --to and --to-wallet, in that order")
        to = list(args.to)
        if args.to_wallets:
            transfer = await _service(c, "transfer_address")
            for name in args.to_wallets:
                to.append(await transfer(name, f"transfer from {args.wallet or 'the custody tier'}"))
        create = await _service(c, "create_withdrawal")
        return await create(list(zip(to, args.amounts)), args.fee_rate, args.user, wallet=args.wallet)
    if args.action == "combine":
        combine = await _service(c, "combine_withdrawal")
        return await combine(args.withdrawal_id, args.psbt)
    if args.action == "sign":
        sign = await _service(c, "sign_withdrawal")
        return await sign(args.withdrawal_id, args.signer)
    if args.action == "bump":
        if len(args.to) != len(args.amounts):
            raise UsageError("give one --amount-sat for every --to")
        bump = await _service(c, "bump_withdrawal")
        return await bump(args.withdrawal_id, args.fee_rate, list(zip(args.to, args.amounts)))
    if args.action == "void":
        void = await _service(c, "void_withdrawal")
        return await void(args.withdrawal_id, args.fee_rate, args.signer, args.by)
    if args.action in ("cancel", "approve"):
        use_case = await _service(c, f"{args.action}_withdrawal")
        return await use_case(args.withdrawal_id, args.by)
    if args.action == "cpfp":
        cpfp = await _service(c, "cpfp_withdrawal")
        return await cpfp(args.withdrawal_id, args.fee_rate)
    use_case = await _service(c, f"{args.action}_withdrawal")
    return await use_case(args.withdrawal_id)


async def cmd_limits(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "show":
        return await (await _service(c, "show_limits"))(args.user)
    set_limits = await _service(c, "set_limits")
    return await set_limits(args.user, daily_sat=args.daily_sat, monthly_sat=args.monthly_sat,
                            single_max_sat=args.single_max_sat, hourly_sat=args.hourly_sat,
                            platform_daily_sat=args.platform_daily_sat, by=args.by)


class AuditBroken(Exception):
    """`audit verify` found the chain broken: its answer is printed as it is, and the exit is 1."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer)
        self.answer = answer


async def cmd_audit(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "verify":
        answer = await (await _service(c, "verify_audit"))()
        if not answer["ok"]:
            raise AuditBroken(answer)
        return answer
    query = await _service(c, "query_audit")
    return await query(args.subject, args.since, args.limit)


async def cmd_wallet(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "add":
        add = await _service(c, "add_wallet")
        return await add(args.name, args.threshold, args.keys, by=args.by)
    listing = await _service(c, "list_wallets")
    return await listing()


async def cmd_custody(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    status = await _service(c, "custody_status")
    return await status()
async def cmd_consolidate(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "plan":
        plan = await _service(c, "plan_consolidation")
        return await plan(args.wallet, args.max_inputs, args.fee_rate)
    if args.action == "run":
        run = await _service(c, "run_consolidation")
        return await run(args.wallet, args.max_inputs, args.fee_rate, args.signer)
    show = await _service(c, "show_consolidation")
    return await show(args.wallet)


async def cmd_stats(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    stats = await _service(c, "stats")
    return await stats()


async def cmd_events(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    list_events = await _service(c, "list_events")
    return await list_events(args.after, args.limit)


async def cmd_addresses(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    uow_factory = c.storage.uow()
    with uow_factory.read() as uow:
        entries = uow.addresses.entries()
    with open(args.output, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(entry.bip329() + "\n")
    return {"path": args.output, "count": len(entries)}


async def cmd_db(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    from kaccy_bitcoin.adapters.sql import migrations
    from kaccy_bitcoin.adapters.sql.storage import make_engine

    engine = make_engine(c.config.database_url(), check_schema=False)
    try:
        before, after = migrations.upgrade(engine)
    finally:
        engine.dispose()
    return {"database": "upgraded", "from": before, "to": after}


async def cmd_ln(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "invoice":
        if args.invoice_action == "create":
            create = await _service(c, "create_order_invoice")
            return await create(args.order_id, args.amount_msat, args.expiry)
        show = await _service(c, "show_order_invoice")
        return await show(args.order_id)
    if args.action == "pay":
        pay = await _service(c, "pay_invoice")
        return await pay(args.payment_request, args.max_fee_sat)
    channels = await _service(c, "list_channels")
    return await channels()


def _serve_choice(args: argparse.Namespace) -> Any:
    from kaccy_bitcoin.bootstrap.serve import ServeOptions

    return ServeOptions(host=args.host, port=args.port, api=not args.no_api, monitor=not args.no_monitor,
                        webhooks=not args.no_webhooks, interval=args.interval, workers=args.workers,
                        reuse_port=args.reuse_port)


async def cmd_run(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    from kaccy_bitcoin.bootstrap.service import run_service

    return await run_service(c, _serve_choice(args), demo=not args.no_demo)


async def cmd_serve(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    from kaccy_bitcoin.bootstrap.serve import serve

    return await serve(c, _serve_choice(args))


async def cmd_apikey(args: argparse.Namespace, c: Container) -> dict[str, Any]:
    if args.action == "create":
        create = await _service(c, "create_api_key")
        return create(args.scopes)
    keys = await _service(c, "manage_api_keys")
    return keys.list() if args.action == "list" else keys.revoke(args.key_id)


COMMANDS: dict[str, Callable[[argparse.Namespace, Container], Awaitable[dict[str, Any]]]] = {
    "order": cmd_order, "monitor": cmd_monitor, "addresses": cmd_addresses, "run": cmd_run,
    "withdraw": cmd_withdraw, "events": cmd_events, "db": cmd_db, "ln": cmd_ln, "serve": cmd_serve,
    "apikey": cmd_apikey, "limits": cmd_limits, "audit": cmd_audit, "wallet": cmd_wallet, "custody": cmd_custody,
    "consolidate": cmd_consolidate, "stats": cmd_stats, "swap": cli_swap.run,
}


def _reported_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """Errors the boundary reports as they are: the input was wrong (exit 2) or something
    outside failed (exit 1), unless the error's own `exit_status` says otherwise."""
    from kaccy_bitcoin.adapters.bitcoin_core.errors import BitcoinCoreError
    from kaccy_bitcoin.adapters.lnd.errors import LndError
    from kaccy_bitcoin.adapters.sql.errors import StorageError
    from kaccy_bitcoin.bootstrap.config import ConfigError
    from kaccy_bitcoin.ports.signer import SignerError

    return (DomainError, ConfigError), (BitcoinCoreError, SignerError, StorageError, LndError)


def _error(code: str, message: str, status: int, details: dict[str, Any] | None = None) -> int:
    emit({"error": {"code": code, "message": redact_credentials(message), **(details or {})}})
    return status


class _LogFormatter(logging.Formatter):
    """One line per record unless --debug: an exception shows as its type and message, not
    a traceback. No URL's user:password, debug or not."""

    def __init__(self, debug: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._debug = debug

    def formatException(self, ei) -> str:  # noqa: ANN001, N802 - logging's name
        if self._debug:
            return super().formatException(ei)
        return f"{ei[0].__name__}: {ei[1]}" if ei[0] is not None else ""

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return super().formatStack(stack_info) if self._debug else ""

    def format(self, record: logging.LogRecord) -> str:
        return redact_credentials(super().format(record))


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter(debug))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


async def _main(args: argparse.Namespace, own_process: bool) -> int:
    import inspect

    from kaccy_bitcoin.bootstrap import config
    from kaccy_bitcoin.bootstrap.container import build

    container = build(config.load())
    if args.command != "db":
        container.storage.engine()   # the schema check: a database behind or ahead is refused here
    if container.config.signer_mnemonic():
        container.gateways.software_signer()   # refuses to start on words for another account
    if own_process:
        _start_up_done()
    try:
        result = await COMMANDS[args.command](args, container)
    finally:
        shutdown = container.shutdown_resources()
        if inspect.isawaitable(shutdown):
            await shutdown
    emit(result)
    return 0


def _start_up_done() -> None:
    """The cyclic GC was off while the start-up imported the libraries and built the container
    (collections then walk a growing heap and free nothing); what it made lives until exit, so it
    is frozen out of the collector's reach, the interpreter's last collection at exit included,
    and the collector runs again for the command itself. Nothing frozen needs the collector to
    close it: `shutdown_resources()` closes the database and the node's session."""
    gc.freeze()
    gc.enable()


def main(argv: list[str] | None = None) -> int:
    """The program. Run as the process's own (`argv` None) it also tunes the process's garbage
    collector during start-up (see `_start_up_done`); called with `argv`, it leaves it alone."""
    own_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]) or not argv:
        parser().print_help(sys.stdout)
        return 0 if argv else 2
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        return _error("usage", str(exc), 2)
    _configure_logging(args.debug)
    import asyncio

    if own_process:
        gc.disable()   # until _start_up_done
    bad_input, outside = _reported_errors()
    try:
        return asyncio.run(_main(args, own_process))
    except UsageError as exc:
        return _error("usage", str(exc), 2)
    except AuditBroken as exc:
        emit(exc.answer)
        return 1
    except (*bad_input, *outside) as exc:
        status = getattr(exc, "exit_status", 2 if isinstance(exc, bad_input) else 1)
        details = exc.details() if hasattr(exc, "details") else None
        return _error(getattr(exc, "code", "invalid"), str(exc), status, details)
    except KeyboardInterrupt:
        return _error("interrupted", "stopped by the user", 130)
    except Exception as exc:  # noqa: BLE001 - the boundary: one JSON error; the traceback only with --debug
        if args.debug:
            logging.getLogger("kaccy_bitcoin").error("unexpected failure", exc_info=True)
        return _error("internal", f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
