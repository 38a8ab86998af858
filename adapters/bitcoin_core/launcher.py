"""Start and stop a local regtest bitcoind in a data dir of ours, on free ports.

Used by `kaccy-bitcoin run` (the project's own node in its data dir) and by the test
suite (one node per test session in a temporary dir).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import attrs


class NodeStartError(RuntimeError):
    code = "node_start_failed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_bitcoind() -> str:
    """$BITCOIND, a bitcoind on PATH, or the project's cached copy (scripts/install-bitcoind.sh)."""
    candidates = [os.environ.get("BITCOIND"), shutil.which("bitcoind")]
    here = pathlib.Path(__file__).resolve()
    for parent in here.parents:
        candidates.append(str(parent / ".cache" / "bitcoind" / "bin" / "bitcoind"))
        if (parent / "pyproject.toml").exists():
            break
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise NodeStartError("no bitcoind found: set BITCOIND, put bitcoind on PATH, or run scripts/install-bitcoind.sh")


@attrs.define
class RegtestNode:
    datadir: pathlib.Path
    bitcoind: str = attrs.field(factory=find_bitcoind)
    rpc_port: int = attrs.field(factory=free_port)
    p2p_port: int = attrs.field(factory=free_port)
    user: str = "kaccy"
    password: str = "kaccy-regtest"
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()
    zmq_port: int | None = None   # publish ZMQ `sequence` and `hashblock` there (127.0.0.1)

    @property
    def zmq_url(self) -> str | None:
        return f"tcp://127.0.0.1:{self.zmq_port}" if self.zmq_port else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    def start(self, timeout: float = 60.0) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        conf = self.datadir / "bitcoin.conf"
        conf.write_text(
            "regtest=1\nserver=1\ntxindex=1\nfallbackfee=0.0002\n"
            "[regtest]\n"
            f"rpcport={self.rpc_port}\nport={self.p2p_port}\nrpcbind=127.0.0.1\nrpcallowip=127.0.0.1\n"
            + (f"rpcuser={self.user}\nrpcpassword={self.password}\n" if self.user else "")
            # listenonion=0: with tor installed (scripts/setup.sh), a node that listens would start
            # a tor of its own (Knots' -torexecute) that reaches the Tor network.
            + "listen=0\nlistenonion=0\ndnsseed=0\nupnp=0\nnatpmp=0\ndiscover=0\nrpcworkqueue=64\nrpcthreads=8\n"
            "peerblockfilters=0\nprinttoconsole=0\n"
            + (f"zmqpubsequence={self.zmq_url}\nzmqpubhashblock={self.zmq_url}\n" if self.zmq_url else ""))
        log = open(self.datadir / "stdout.log", "ab")
        self.process = subprocess.Popen(
            [self.bitcoind, f"-datadir={self.datadir}", f"-conf={conf}", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.datadir / "stdout.log").read_text(errors="replace")[-2000:]
                raise NodeStartError(f"bitcoind exited with {self.process.returncode}: {tail}")
            cookie_or_port_ready = self._port_open()
            if cookie_or_port_ready and (self.datadir / "regtest" / "bitcoind.pid").exists():
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        raise NodeStartError(f"bitcoind did not open RPC port {self.rpc_port} within {timeout}s")

    def _port_open(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.rpc_port)) == 0

    def stop(self, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
