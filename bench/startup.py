"""Start-up time of the command line: each command's wall time beside `python -c pass`, same run.

Run: `make bench` (or `BITCOIND=... .venv/bin/python bench/startup.py [--runs N] [--no-node]`).
Every command is a fresh process, as users script it; the figure is the median of N runs
(taken in turn, so a busy moment of the machine touches every command alike), with the
fastest beside it. Bytecode is cached in a temporary dir (warmed by one run of each command
first), as an installed program runs: PYTHONDONTWRITEBYTECODE, if set, would otherwise make
every run compile the package again.

`order show` reads a SQLite database prepared here with one order and needs no node (none is
configured for it). `order create` runs against a regtest node started here (skipped with
`--no-node` or when no bitcoind is found); each run creates a new order.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Union

from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.memory.clock import SystemClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.application.orders import CreateOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.money import Satoshis
from table import print_table  # noqa: E402 - bench/ is the script's own folder

CLI = str(pathlib.Path(sys.executable).parent / "kaccy-bitcoin")
ORDER_SHOW = "kaccy-bitcoin order show ID (SQLite, no node)"
ORDER_SHOW_TARGET_MS = 250
# The storage library on its own, with the collector held off during the imports and frozen
# for the exit as the command line does: SQLAlchemy Core, what the repositories use (the part of
# `order show` that is the library's, whatever the command does), and SQLModel (SQLAlchemy's ORM
# and pydantic on top), which only creating or migrating a database imports.
SQLALCHEMY = "python: import sqlalchemy (Core; GC as the CLI)"
SQLALCHEMY_CODE = "import gc; gc.disable(); import sqlalchemy; gc.freeze()"
SQLMODEL = "python: import sqlmodel (GC as the CLI)"
SQLMODEL_CODE = "import gc; gc.disable(); import sqlmodel; gc.freeze()"
WORDS = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"


def vpub() -> str:
    seed = Bip39SeedGenerator(WORDS).Generate()
    return Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()


def prepare_database(url: str, xpub: str) -> None:
    """One order, written by the use case `order create` runs, with a fake chain in place of
    the node (the database is what `order create` leaves; no node is involved)."""
    deriver = Bip32AddressDeriver(xpub, Network.REGTEST)
    engine = make_engine(url)
    try:
        watch = WatchRange(deriver, FakeChain(lambda desc, end: deriver.addresses(0, 0, end + 1)), 20)
        create = CreateOrder(SqlUnitOfWorkFactory(engine), deriver, watch, SystemClock(), PaymentSettings())
        asyncio.run(create("bench-order", Satoshis(25_000)))
    finally:
        engine.dispose()


def child_env(tmp: pathlib.Path, **kaccy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KACCY_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return {**env, **kaccy}


Argv = Union[list[str], Callable[[int], list[str]]]   # a command, or one per run (given its number)


class Timings:
    """Commands run in turn, `runs` times each; wall time of each process."""

    def __init__(self) -> None:
        self.commands: dict[str, tuple[Argv, dict[str, str]]] = {}
        self.times: dict[str, list[float]] = {}

    def add(self, name: str, argv: Argv, env: dict[str, str]) -> None:
        self.commands[name] = (argv, env)
        self.times[name] = []

    def _run(self, name: str, i: int) -> float:
        argv, env = self.commands[name]
        args = argv(i) if callable(argv) else argv
        t = time.perf_counter()
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stdout} {proc.stderr[-2000:]}")
        return elapsed

    def measure(self, runs: int) -> None:
        for name in self.commands:   # warm-up: compiles the bytecode cache, creates the watch wallet
            self._run(name, -1)
        for i in range(runs):
            for name in self.commands:
                self.times[name].append(self._run(name, i))

    def median_ms(self, name: str) -> float:
        return statistics.median(self.times[name]) * 1000

    def min_ms(self, name: str) -> float:
        return min(self.times[name]) * 1000


def start_node(tmp: pathlib.Path):  # noqa: ANN201
    """A regtest node in `tmp`, or None when there is no bitcoind."""
    from kaccy_bitcoin.adapters.bitcoin_core.launcher import NodeStartError, RegtestNode

    try:
        node = RegtestNode(tmp / "node")
    except NodeStartError as exc:
        print(f"  (no node: {exc}; order create skipped)", flush=True)
        return None
    node.start()
    return node


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--runs", type=int, default=15)
    args.add_argument("--no-node", action="store_true", help="skip `order create` (needs a regtest node)")
    opts = args.parse_args()
    print(f"kaccy-bitcoin start-up benchmarks on {os.cpu_count()} cores, median of {opts.runs} runs", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        xpub = vpub()
        url = f"sqlite:///{tmp}/startup.db"
        prepare_database(url, xpub)
        offline = child_env(tmp, KACCY_NETWORK="regtest", KACCY_DATA_DIR=str(tmp), KACCY_DATABASE_URL=url)
        shown = subprocess.run([CLI, "order", "show", "bench-order"], env=offline, capture_output=True, text=True)
        assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "pending", (shown.stdout, shown.stderr)

        timings = Timings()
        timings.add("python -c pass", [sys.executable, "-c", "pass"], offline)
        timings.add(SQLALCHEMY, [sys.executable, "-c", SQLALCHEMY_CODE], offline)
        timings.add(SQLMODEL, [sys.executable, "-c", SQLMODEL_CODE], offline)
        timings.add("kaccy-bitcoin --help", [CLI, "--help"], offline)
        timings.add(ORDER_SHOW, [CLI, "order", "show", "bench-order"], offline)
        node = None if opts.no_node else start_node(tmp)
        try:
            if node is not None:
                online = {**offline, "KACCY_XPUB": xpub, "KACCY_BITCOIN_RPC_URL": node.url,
                          "KACCY_BITCOIN_RPC_USER": node.user, "KACCY_BITCOIN_RPC_PASSWORD": node.password,
                          "KACCY_BITCOIN_RPC_WALLET": "startup-watch"}
                timings.add("kaccy-bitcoin order create ID --amount-sat N (regtest node)",
                            lambda i: [CLI, "order", "create", f"created-{i + 1}", "--amount-sat", "10000"], online)
            timings.measure(opts.runs)
        finally:
            if node is not None:
                node.stop()

    base = f"python -c pass: {timings.median_ms('python -c pass'):,.0f} ms"
    references = {"python -c pass": "",
                  ORDER_SHOW: f"{base}; import sqlalchemy alone: {timings.median_ms(SQLALCHEMY):,.0f} ms"}
    targets = {ORDER_SHOW: f"<= {ORDER_SHOW_TARGET_MS} ms"}
    rows = []
    for name in timings.commands:
        ours = f"{timings.median_ms(name):,.0f} ms (fastest {timings.min_ms(name):,.0f})"
        rows.append((name, ours, references.get(name, base), targets.get(name, "")))
    print_table(rows)


if __name__ == "__main__":
    main()
