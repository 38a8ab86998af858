"""Helpers for payment scenarios on the real regtest node: the CLI as a separate process,
and the same application in-process (for fakes such as a manual clock)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

from kaccy_bitcoin.adapters.memory.publisher import RecordingNotifier
from kaccy_bitcoin.bootstrap import config
from kaccy_bitcoin.bootstrap.container import Container, build

CLI = str(pathlib.Path(sys.executable).parent / "kaccy-bitcoin")


class Shop:
    """One merchant: its own account, watch wallet and database."""

    def __init__(self, node, tmp_path: pathlib.Path, **settings: str) -> None:  # noqa: ANN001
        self.node = node
        self.words, self.vpub = node.fresh_vpub()
        defaults = {"KACCY_XPUB": self.vpub, "KACCY_DATA_DIR": str(tmp_path),
                    "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/shop.db",
                    "KACCY_BITCOIN_RPC_WALLET": f"watch-{uuid.uuid4().hex[:10]}"}
        self.env = {**os.environ, **node.env(**{**defaults, **settings})}

    def cli(self, *args: str, check: bool = True) -> tuple[int, dict[str, Any]]:
        proc = subprocess.run([CLI, *args], env=self.env, capture_output=True, text=True, timeout=120)
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1, f"expected one JSON line, got {proc.stdout!r} (stderr {proc.stderr[-2000:]})"
        out = json.loads(lines[0])
        if check:
            assert proc.returncode == 0, f"{args}: {out} {proc.stderr[-2000:]}"
        return proc.returncode, out

    def order(self, order_id: str, amount_sat: int, *extra: str) -> dict[str, Any]:
        return self.cli("order", "create", order_id, "--amount-sat", str(amount_sat), *extra)[1]

    def show(self, order_id: str) -> dict[str, Any]:
        return self.cli("order", "show", order_id)[1]

    def poll(self) -> list[dict[str, Any]]:
        return self.cli("monitor", "--once")[1]["events"]

    def container(self) -> Container:
        env = {k: v for k, v in self.env.items() if k.startswith("KACCY_")}
        c = build(config.load(env))
        self.notifier = RecordingNotifier()
        c.gateways.notifier.override(self.notifier)
        return c


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]
