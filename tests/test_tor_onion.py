"""`serve --onion` against Debian's tor, started here with its own data directory and
`DisableNetwork 1`: tor's control port answers ADD_ONION without ever reaching the Tor network.
The address is printed, listed by tor, withdrawn when `serve` stops, and the same after a
restart (also after a kill -9)."""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

from tests.payments_harness import CLI, Shop
from tests.service_harness import Service, service_env

TOR = shutil.which("tor") or next((p for p in ("/usr/bin/tor", "/usr/sbin/tor") if pathlib.Path(p).exists()), None)
pytestmark = pytest.mark.skipif(TOR is None, reason="Debian's tor is not installed (scripts/setup.sh installs it)")
ONION = re.compile(r"^[a-z2-7]{56}\.onion$")


class OfflineTor:
    """tor with DisableNetwork 1, no SOCKS port, a control port chosen by tor, cookie auth (or
    only a password, when one is given)."""

    def __init__(self, root: pathlib.Path, password: str | None = None) -> None:
        self.password = password
        if password is None:
            auth = "CookieAuthentication 1\n"
        else:
            hashed = subprocess.run([TOR, "--quiet", "--hash-password", password], capture_output=True, text=True,
                                    check=True, timeout=30).stdout.strip().splitlines()[-1]
            auth = f"CookieAuthentication 0\nHashedControlPassword {hashed}\n"
        data = root / "data"
        data.mkdir(parents=True, mode=0o700)
        self.port_file = root / "control-port"
        torrc = root / "torrc"
        torrc.write_text(f"DataDirectory {data}\nDisableNetwork 1\nSocksPort 0\nControlPort 127.0.0.1:auto\n"
                         f"ControlPortWriteToFile {self.port_file}\n{auth}"
                         f"Log notice file {root / 'tor.log'}\nAvoidDiskWrites 1\n")
        (root / "defaults").write_text("")
        self.log = root / "tor.log"
        self.process = subprocess.Popen([TOR, "--defaults-torrc", str(root / "defaults"), "-f", str(torrc)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (self.port_file.exists() and self.port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"tor did not open its control port: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.control = self.port_file.read_text().strip().removeprefix("PORT=")

    def detached_onions(self) -> list[str]:
        from stem.control import Controller

        host, port = self.control.rsplit(":", 1)
        with Controller.from_port(address=host, port=int(port)) as controller:
            controller.authenticate(password=self.password)
            assert controller.get_conf("DisableNetwork") == "1"
            return controller.list_ephemeral_hidden_services(detached=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@pytest.fixture
def tor(tmp_path):  # noqa: ANN001, ANN201
    running = OfflineTor(tmp_path / "tor")
    yield running
    running.stop()


def test_serve_onion_publishes_a_stable_address(node, tmp_path, tor) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path / "shop")
    env = service_env(shop.env, KACCY_TOR_CONTROL=tor.control)
    service = Service(env, tmp_path / "serve-1.log", "--no-monitor", "--no-webhooks", "--onion")
    try:
        address = service.announced["onion"]
        assert ONION.match(address), service.announced
        assert service.announced["listening"].startswith("http://127.0.0.1:")
        assert tor.detached_onions() == [address.removesuffix(".onion")]
        key = tmp_path / "shop" / "tor" / "onion_service_key"
        assert key.stat().st_mode & 0o077 == 0 and key.read_text().startswith("ED25519-V3:")
    finally:
        assert service.stop() == 0
    assert tor.detached_onions() == []          # withdrawn when serve stops

    again = Service(env, tmp_path / "serve-2.log", "--no-monitor", "--no-webhooks", "--onion")
    assert again.announced["onion"] == address
    again.stop(signal.SIGKILL)                  # left in tor: the next start takes it back
    assert tor.detached_onions() == [address.removesuffix(".onion")]
    third = Service(env, tmp_path / "serve-3.log", "--no-monitor", "--no-webhooks", "--onion")
    try:
        assert third.announced["onion"] == address
        assert tor.detached_onions() == [address.removesuffix(".onion")]
    finally:
        third.stop()


def test_a_control_port_that_does_not_answer_is_tor_control_failed(node, tmp_path, tor) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path / "shop")
    tor.stop()
    env = service_env(shop.env, KACCY_TOR_CONTROL=tor.control)
    proc = subprocess.run([CLI, "serve", "--port", "0", "--no-monitor", "--no-webhooks", "--onion"], env=env,
                          capture_output=True, text=True, timeout=60)
    (line,) = proc.stdout.strip().splitlines()
    out = json.loads(line)
    assert proc.returncode == 1 and out["error"]["code"] == "tor_control_failed", out
    assert tor.control in out["error"]["message"]
    proc = subprocess.run([CLI, "serve", "--no-api", "--onion"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "usage"


def test_a_control_port_with_a_password(node, tmp_path) -> None:  # noqa: ANN001
    tor = OfflineTor(tmp_path / "tor", password="correct horse")
    try:
        shop = Shop(node, tmp_path / "shop")
        env = service_env(shop.env, KACCY_TOR_CONTROL=tor.control, KACCY_TOR_CONTROL_PASSWORD="wrong")
        proc = subprocess.run([CLI, "serve", "--port", "0", "--no-monitor", "--no-webhooks", "--onion"], env=env,
                              capture_output=True, text=True, timeout=60)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert proc.returncode == 1 and out["error"]["code"] == "tor_control_failed", out
        assert "KACCY_TOR_CONTROL_PASSWORD" in out["error"]["message"]
        env["KACCY_TOR_CONTROL_PASSWORD"] = "correct horse"
        service = Service(env, tmp_path / "serve.log", "--no-monitor", "--no-webhooks", "--onion")
        try:
            assert ONION.match(service.announced["onion"])
            assert tor.detached_onions() == [service.announced["onion"].removesuffix(".onion")]
        finally:
            service.stop()
    finally:
        tor.stop()
