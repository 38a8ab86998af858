"""What a command imports before it answers, each command run as its own process (as users run
it): `--help` and a usage error load no library; `order show` loads the SQL storage and the
domain, not the node's client, the hardware wallets, bip-utils or python-bitcointx, and no command
that uses an existing database loads SQLModel, pydantic or SQLAlchemy's ORM (only creating or
migrating a database does, through adapters/sql/tables.py and Alembic). What each
import costs is measured by bench/startup.py; these tests keep a new import at the top of a
module from bringing it back unnoticed."""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

from bip_utils import Bip39SeedGenerator, Bip84, Bip84Coins

from kaccy_bitcoin.adapters.bip32.deriver import Bip32AddressDeriver
from kaccy_bitcoin.adapters.memory.clock import SystemClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.application.orders import CreateOrder, WatchRange
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.money import Satoshis

WORDS = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
# The CLI's entry point, then what the process holds once the command is done.
PROBE = textwrap.dedent("""
    import gc, json, sys
    report = sys.argv.pop(1)
    from kaccy_bitcoin.bootstrap.cli import main
    status = main()
    with open(report, "w") as f:
        json.dump({"modules": sorted(sys.modules), "gc_enabled": gc.isenabled()}, f)
    sys.exit(status)
""")
# Libraries whose import alone costs tens of milliseconds or more.
LIBRARIES = ("sqlalchemy", "sqlmodel", "pydantic", "alembic", "psycopg", "aiohttp", "hwilib", "bip_utils",
             "bitcointx", "dependency_injector", "asyncio", "attr", "transitions")
# What `order show` has no use for: the node, the keys, devices, PSBTs, migrations.
NOT_FOR_ORDER_SHOW = ("aiohttp", "hwilib", "bip_utils", "bitcointx", "alembic", "psycopg",
                      "kaccy_bitcoin.adapters.bitcoin_core.rpc", "kaccy_bitcoin.adapters.bitcoin_core.backend",
                      "kaccy_bitcoin.adapters.hwi", "kaccy_bitcoin.adapters.bip32", "kaccy_bitcoin.adapters.keys",
                      "kaccy_bitcoin.domain.psbt", "kaccy_bitcoin.application.withdrawals",
                      "kaccy_bitcoin.application.monitor")
# What reading and writing rows has no use for: the schema's declaration and the ORM under it.
NOT_FOR_A_DATABASE_IN_USE = ("sqlmodel", "pydantic", "sqlalchemy.orm", "kaccy_bitcoin.adapters.sql.tables",
                             "kaccy_bitcoin.adapters.sql.migrations")


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that are one of `names` or inside one of them."""
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def run(tmp_path: pathlib.Path, *args: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KACCY_")}
    env.update({"KACCY_DATA_DIR": str(tmp_path), "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/kaccy.db"})
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(report), *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), json.loads(report.read_text())


def test_help_and_usage_errors_load_no_library(tmp_path: pathlib.Path) -> None:
    status, _, report = run(tmp_path, "order", "shw", "o-1")
    assert status == 2
    assert loaded(report["modules"], LIBRARIES) == []
    assert loaded(report["modules"], ("kaccy_bitcoin.bootstrap.container", "kaccy_bitcoin.adapters.sql")) == []
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "help.json"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "order" in proc.stdout
    assert loaded(json.loads((tmp_path / "help.json").read_text())["modules"], LIBRARIES) == []


def order_in(tmp_path: pathlib.Path) -> dict[str, Any]:
    """An order as `order create` writes it, with a fake chain in place of the node."""
    seed = Bip39SeedGenerator(WORDS).Generate()
    vpub = Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0).PublicKey().ToExtended()
    deriver = Bip32AddressDeriver(vpub, Network.REGTEST)
    engine = make_engine(f"sqlite:///{tmp_path}/kaccy.db")
    try:
        watch = WatchRange(deriver, FakeChain(lambda desc, end: deriver.addresses(0, 0, end + 1)), 20)
        create = CreateOrder(SqlUnitOfWorkFactory(engine), deriver, watch, SystemClock(), PaymentSettings())
        return asyncio.run(create("o-1", Satoshis(25_000)))
    finally:
        engine.dispose()


def test_order_show_loads_the_storage_not_the_node_keys_or_devices(tmp_path: pathlib.Path) -> None:
    created = order_in(tmp_path)
    status, out, report = run(tmp_path, "order", "show", "o-1")   # no node is configured
    assert status == 0 and (out["address"], out["status"]) == (created["address"], "pending")
    modules = report["modules"]
    assert loaded(modules, ("sqlalchemy", "kaccy_bitcoin.application.orders")) != []   # the probe sees imports
    assert loaded(modules, NOT_FOR_ORDER_SHOW) == []
    assert loaded(modules, NOT_FOR_A_DATABASE_IN_USE) == []
    # The collector paused for the start-up runs again for the command (and for `monitor`)...
    assert report["gc_enabled"]
    # ...and what start-up built is out of its reach, the database engine included: the
    # command closed its connections itself, so SQLite's last close removed the WAL file.
    assert not (tmp_path / "kaccy.db-wal").exists()


def test_commands_on_a_database_in_use_load_no_orm_and_creating_one_does(tmp_path: pathlib.Path) -> None:
    order_in(tmp_path)
    status, out, report = run(tmp_path, "events")   # the outbox (creating an order records no event)
    assert status == 0 and out["events"] == [], out
    assert loaded(report["modules"], ("sqlalchemy", "kaccy_bitcoin.adapters.sql.storage")) != []
    assert loaded(report["modules"], NOT_FOR_A_DATABASE_IN_USE) == []
    # A new database is created at the current schema from the SQLModel tables (Alembic's way).
    new = tmp_path / "new"
    new.mkdir()
    status, out, report = run(new, "events")
    assert status == 0 and out["events"] == []
    # (pydantic too: the container kept it from dependency-injector only while that loaded)
    assert {"sqlmodel", "pydantic", "kaccy_bitcoin.adapters.sql.tables"} <= set(report["modules"])


def test_the_container_imports_no_adapter_or_use_case_until_one_is_built() -> None:
    code = "import json, sys, kaccy_bitcoin.bootstrap.container; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    modules = json.loads(proc.stdout)
    assert loaded(modules, ("kaccy_bitcoin.adapters", "kaccy_bitcoin.application")) == []
    assert loaded(modules, ("sqlalchemy", "aiohttp", "bip_utils", "bitcointx", "hwilib")) == []


def test_every_lazy_name_in_the_container_is_the_class_it_names() -> None:
    from kaccy_bitcoin.bootstrap import container

    stand_ins = {name: value for name, value in vars(container).items() if isinstance(value, container._Lazy)}
    assert len(stand_ins) > 20
    for name, lazy in stand_ins.items():
        assert lazy.name == name and lazy.target().__name__ == name, lazy
