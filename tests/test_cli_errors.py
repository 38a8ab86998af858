"""The command line's refusals, each through the CLI as a separate process: one JSON error on
stdout, the documented exit status, no traceback unless --debug, no password anywhere."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc, redact_credentials
from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcConfigError
from kaccy_bitcoin.bootstrap import config

CLI = str(pathlib.Path(sys.executable).parent / "kaccy-bitcoin")
SECRET = "hunter2-s3cret"
# The CLI with something changed first, the way a test double is plugged into a process.
WRAPPED = "import sys\n{setup}\nfrom kaccy_bitcoin.bootstrap.cli import main\nsys.exit(main())"


def run(tmp_path: pathlib.Path, *args: str, setup: str | None = None, **settings: str) -> tuple[int, dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KACCY_")}
    env.update({"KACCY_DATA_DIR": str(tmp_path), "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/kaccy.db", **settings})
    command = [CLI] if setup is None else [sys.executable, "-c", WRAPPED.format(setup=setup)]
    proc = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {proc.stdout!r} (stderr {proc.stderr[-2000:]})"
    return proc.returncode, json.loads(lines[0]), proc.stderr


def error(out: dict[str, Any]) -> tuple[str, str]:
    return out["error"]["code"], out["error"]["message"]


def test_a_database_that_cannot_be_reached(tmp_path: pathlib.Path) -> None:
    url = f"postgresql+psycopg://kaccy:{SECRET}@127.0.0.1:1/kaccy"   # nothing listens on port 1
    status, out, stderr = run(tmp_path, "order", "show", "o-1", KACCY_DATABASE_URL=url)
    code, message = error(out)
    assert (status, code) == (1, "database_unavailable") and "127.0.0.1:1" in message
    assert SECRET not in message + stderr and "Traceback" not in stderr


def test_a_sqlite_path_that_cannot_be_written(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    status, out, stderr = run(tmp_path, "order", "show", "o-1",
                              KACCY_DATABASE_URL=f"sqlite:///{tmp_path}/a-file/kaccy.db")
    assert (status, error(out)[0]) == (1, "database_unavailable") and "Traceback" not in stderr


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "postgresql"])
def test_a_postgresql_url_without_its_driver(tmp_path: pathlib.Path, scheme: str) -> None:
    status, out, stderr = run(tmp_path, "order", "show", "o-1", setup="sys.modules['psycopg'] = None",
                              KACCY_DATABASE_URL=f"{scheme}://kaccy:{SECRET}@127.0.0.1:5432/kaccy")
    code, message = error(out)
    assert (status, code) == (1, "database_driver_missing")
    assert "pip install 'kaccy-bitcoin[postgres]'" in message and SECRET not in message + stderr
    assert "Traceback" not in stderr


FAILING_COMMAND = textwrap.dedent("""
    import logging
    from kaccy_bitcoin.bootstrap import cli
    async def failing(args, container):
        try:
            raise KeyError("inner")
        except KeyError:
            logging.getLogger("kaccy_bitcoin.test").exception("retrying http://kaccy:{secret}@node:8332/")
        raise RuntimeError("boom at http://kaccy:{secret}@node:8332/")
    cli.COMMANDS["order"] = failing
""").format(secret=SECRET)


def test_an_unexpected_error_shows_no_traceback_without_debug(tmp_path: pathlib.Path) -> None:
    status, out, stderr = run(tmp_path, "order", "show", "o-1", setup=FAILING_COMMAND)
    code, message = error(out)
    assert (status, code) == (1, "internal") and message == "RuntimeError: boom at http://***@node:8332/"
    assert "Traceback" not in stderr and "KeyError: 'inner'" in stderr   # the log line, in one line
    assert SECRET not in stderr


def test_debug_prints_the_traceback(tmp_path: pathlib.Path) -> None:
    status, out, stderr = run(tmp_path, "--debug", "order", "show", "o-1", setup=FAILING_COMMAND)
    assert (status, error(out)[0]) == (1, "internal")
    assert stderr.count("Traceback (most recent call last)") == 2   # the logged one and the failure
    assert "RuntimeError: boom" in stderr and SECRET not in stderr


def test_exit_status_follows_the_error(tmp_path: pathlib.Path) -> None:
    status, out, _ = run(tmp_path, "order", "show", "nope")   # bad input: 2
    assert (status, error(out)[0]) == (2, "not_found")
    rejected = ("from kaccy_bitcoin.bootstrap import cli\n"
                "from kaccy_bitcoin.application.withdrawals import RejectedByNode\n"
                "async def broadcast(args, container):\n"
                "    raise RejectedByNode('the node refused it: txn-mempool-conflict')\n"
                "cli.COMMANDS['withdraw'] = broadcast")
    status, out, _ = run(tmp_path, "withdraw", "broadcast", "w-1", setup=rejected)   # outside: 1
    assert (status, error(out)[0]) == (1, "rejected_by_node")


@pytest.mark.parametrize("interval", ["0", "-5", "nan", "inf"])
def test_monitor_refuses_an_interval_that_is_not_positive(tmp_path: pathlib.Path, interval: str) -> None:
    status, out, _ = run(tmp_path, "monitor", "--interval", interval)
    code, message = error(out)
    assert (status, code) == (2, "usage") and "--interval must be a positive number of seconds" in message


def test_a_poll_interval_setting_that_is_not_positive(tmp_path: pathlib.Path) -> None:
    status, out, _ = run(tmp_path, "monitor", "--once", KACCY_POLL_INTERVAL="0")
    assert (status, error(out)[0]) == (2, "config_error") and "KACCY_POLL_INTERVAL" in error(out)[1]
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(config.ConfigError, match="KACCY_POLL_INTERVAL must be a positive number"):
            config.load({"KACCY_POLL_INTERVAL": bad})
    assert config.load({"KACCY_POLL_INTERVAL": "0.5"})["poll_interval"] == 0.5
    assert config.load({"KACCY_STUCK_AFTER": "0"})["stuck_after"] == 0.0   # zero is fine where it is no sleep


def test_an_rpc_url_with_credentials_is_refused_without_showing_them(tmp_path: pathlib.Path) -> None:
    status, out, stderr = run(tmp_path, "monitor", "--once", KACCY_XPUB="unused", KACCY_BITCOIN_RPC_USER="kaccy",
                              KACCY_BITCOIN_RPC_URL=f"http://kaccy:{SECRET}@127.0.0.1:18443")
    code, message = error(out)
    assert (status, code) == (2, "config_error") and "http://***@127.0.0.1:18443" in message
    assert SECRET not in message + stderr
    with pytest.raises(RpcConfigError) as refused:
        BitcoinRpc(f"ftp://kaccy:{SECRET}@node", user="kaccy")
    assert SECRET not in str(refused.value)


def test_redact_credentials() -> None:
    assert redact_credentials(f"at http://kaccy:{SECRET}@node:8332/wallet/w and "
                              f"postgresql+psycopg://u:p@ss@db/kaccy") == \
        "at http://***@node:8332/wallet/w and postgresql+psycopg://***@db/kaccy"
    assert redact_credentials("http://node:8332/ postgresql://postgres@db/x") == \
        "http://node:8332/ postgresql://postgres@db/x"   # no password: nothing hidden
