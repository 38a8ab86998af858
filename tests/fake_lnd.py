"""Runs `kaccy-bitcoin-fake-lnd` as its own process, the way a real LND runs beside us."""
from __future__ import annotations

import json
import pathlib
import select
import socket
import subprocess
import sys

import aiohttp

from kaccy_bitcoin.adapters.lnd.client import pinned_ssl_context

SCRIPT = pathlib.Path(sys.executable).parent / "kaccy-bitcoin-fake-lnd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeLndProcess:
    def __init__(self, data_dir: pathlib.Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.info: dict = {}

    def start(self, timeout: float = 30.0) -> dict:
        self.process = subprocess.Popen([str(SCRIPT), "--port", str(self.port), "--data-dir", str(self.data_dir)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the fake LND did not start: {self.process.stderr.read()}")
        self.info = json.loads(line)
        return self.info

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    @property
    def rest_url(self) -> str:
        return self.info["rest_url"]

    async def control(self, route: str, body: dict) -> tuple[int, dict]:
        """POST to a test-control route under /_fake/ (no macaroon, TLS pinned to its cert)."""
        connector = aiohttp.TCPConnector(ssl=pinned_ssl_context(self.info["tls_cert"]))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(f"{self.rest_url}/_fake/{route}", json=body) as response:
                return response.status, await response.json()

    async def pay(self, payment_request: str) -> dict:
        status, body = await self.control("pay", {"payment_request": payment_request})
        assert status == 200, body
        return body

    async def invoice_elsewhere(self, amount_msat: int, memo: str = "elsewhere") -> dict:
        status, body = await self.control("invoice", {"amount_msat": amount_msat, "memo": memo})
        assert status == 200, body
        return body
