"""The `kaccy-bitcoin` command line.

Every command prints exactly one JSON object on stdout and exits 0; on bad input or
a failure it prints {"error": {"code": ..., "message": ...}} and exits non-zero
(2: the input was wrong, 1: something outside failed; an error may say otherwise with an
`exit_status`). No traceback is printed unless `--debug` asks for one, and no URL shows
its user:password. Each command is its own process: everything lives in the database
between them, and every command but `db upgrade` refuses a database whose schema is
not this release's.

One module per command group (`orders.py` is `kaccy-bitcoin order ...`), each with its
`NAME`, `register(subparsers)` and `async run(args, container) -> dict`; this module only
assembles them and translates errors at the boundary. A new group is a new module added to
GROUPS.

Start-up time: a command imports what it uses when it runs, nothing at the top of these
modules but the standard library and two dependency-free error modules; `--help` and a
usage error load no library at all (bench/startup.py, tests/test_startup_imports.py).
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from kaccy_bitcoin.adapters.bitcoin_core.errors import redact_credentials
from kaccy_bitcoin.bootstrap.cli import (addresses, apikey, audit, consolidate, custody, db, events, limits, ln,
                                         monitor, nodes, orders, peg, run, serve, stats, swap, wallet,
                                         withdraw)
from kaccy_bitcoin.bootstrap.cli.common import Parser, UsageError, emit
from kaccy_bitcoin.domain.errors import DomainError

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

__all__ = ["COMMANDS", "GROUPS", "UsageError", "emit", "main", "parser"]

# In the order `--help` lists them.
GROUPS = (orders, monitor, addresses, withdraw, consolidate, stats, events, limits, audit, db, ln, serve, apikey,
          wallet, custody, swap, peg, nodes, run)
COMMANDS: dict[str, Callable[[argparse.Namespace, Container], Awaitable[dict[str, Any]]]] = {
    group.NAME: group.run for group in GROUPS}


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="kaccy-bitcoin", description="Bitcoin payments for the Kaccy Protocol.")
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error on stderr")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
    return p


def _reported_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """Errors the boundary reports as they are: the input was wrong (exit 2) or something
    outside failed (exit 1), unless the error's own `exit_status` says otherwise."""
    from kaccy_bitcoin.adapters.bitcoin_core.errors import BitcoinCoreError
    from kaccy_bitcoin.adapters.lnd.errors import LndError
    from kaccy_bitcoin.adapters.net.errors import ProxyConfigError, ProxyUnreachable, TorControlFailed
    from kaccy_bitcoin.adapters.sql.errors import StorageError
    from kaccy_bitcoin.bootstrap.config import ConfigError
    from kaccy_bitcoin.domain.errors import MonitorPollFailed
    from kaccy_bitcoin.ports.signer import SignerError

    return ((DomainError, ConfigError, ProxyConfigError),
            (BitcoinCoreError, SignerError, StorageError, LndError, MonitorPollFailed, ProxyUnreachable, TorControlFailed))


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
    except audit.AuditBroken as exc:
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
