"""`kaccy-bitcoin ln pay` and `ln channels` as users script them: separate processes, against
the fake LND run as its own process over HTTPS."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.fake_lnd import FakeLndProcess
from tests.payments_harness import CLI


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory):
    process = FakeLndProcess(tmp_path_factory.mktemp("fake-lnd-cli"))
    process.start()
    yield process
    process.stop()


def ln(fake: FakeLndProcess, tmp_path, *args: str, **env: str) -> tuple[int, dict]:  # noqa: ANN001
    environment = {**os.environ, "KACCY_NETWORK": "regtest", "KACCY_DATA_DIR": str(tmp_path),
                   "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/ln.db", "KACCY_LND_REST_URL": fake.rest_url,
                   "KACCY_LND_MACAROON": fake.info["macaroon"], "KACCY_LND_TLS_CERT": fake.info["tls_cert"], **env}
    proc = subprocess.run([CLI, "ln", *args], env=environment, capture_output=True, text=True, timeout=60)
    (line,) = proc.stdout.strip().splitlines()
    return proc.returncode, json.loads(line)


def test_channels_shape(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    rc, out = ln(fake, tmp_path, "channels")
    assert rc == 0
    (channel,) = out["channels"]
    assert set(channel) == {"channel_id", "capacity_sat", "local_balance_sat", "remote_balance_sat", "active"}
    assert channel["capacity_sat"] == 1_000_000 and channel["active"] is True


async def test_pay_succeeds_then_fails_above_the_local_balance(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    before = ln(fake, tmp_path, "channels")[1]["channels"][0]["local_balance_sat"]
    invoice = await fake.invoice_elsewhere(25_000_000, "supplier")
    rc, out = ln(fake, tmp_path, "pay", invoice["payment_request"], "--max-fee-sat", "50")
    assert rc == 0 and set(out) == {"payment_hash", "state", "amount_msat", "fee_msat", "failure_reason"}
    assert (out["state"], out["amount_msat"], out["failure_reason"]) == ("succeeded", 25_000_000, None)
    assert out["payment_hash"] == invoice["payment_hash"] and 0 < out["fee_msat"] <= 50_000
    after = ln(fake, tmp_path, "channels")[1]["channels"][0]["local_balance_sat"]
    assert after == (before * 1000 - 25_000_000 - out["fee_msat"]) // 1000   # whole sat, rounded down
    big = await fake.invoice_elsewhere(900_000_000, "too much")
    rc, out = ln(fake, tmp_path, "pay", big["payment_request"])
    assert rc == 0 and (out["state"], out["failure_reason"]) == ("failed", "FAILURE_REASON_INSUFFICIENT_BALANCE")


def test_refusals_are_typed(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    rc, out = ln(fake, tmp_path, "channels", KACCY_LND_REST_URL="")
    assert (rc, out["error"]["code"]) == (2, "lightning_unavailable") and "KACCY_LND_REST_URL" in out["error"]["message"]
    wrong = tmp_path / "wrong.macaroon"
    wrong.write_bytes(b"\x01" * 32)
    rc, out = ln(fake, tmp_path, "channels", KACCY_LND_MACAROON=str(wrong))
    assert rc == 1 and out["error"]["code"] == "lnd_auth_failed"
    rc, out = ln(fake, tmp_path, "pay", "lnbcrt1notaninvoice")
    assert rc != 0 and "error" in out
