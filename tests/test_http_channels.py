"""Lightning channel management through its public faces, against the fake LND (its own process,
LND's REST paths and fields): `ln channel open` → pending until the funding confirms → active;
`ln channel close` (cooperative or forced) → closing → gone; each an audited operator action;
the same over HTTP for an admin key only."""
from __future__ import annotations

import json
import os
import subprocess

import aiohttp
import coincurve
import pytest

from tests.fake_lnd import FakeLndProcess
from tests.payments_harness import CLI, Shop
from tests.service_harness import Client, Service, api_key, service_env


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    process = FakeLndProcess(tmp_path_factory.mktemp("fake-lnd-channels"))
    process.start()
    yield process
    process.stop()


def lnd_env(fake: FakeLndProcess) -> dict[str, str]:
    return {"KACCY_LND_REST_URL": fake.rest_url, "KACCY_LND_MACAROON": fake.info["macaroon"],
            "KACCY_LND_TLS_CERT": fake.info["tls_cert"]}


def cli(fake: FakeLndProcess, tmp_path, *args: str) -> tuple[int, dict]:  # noqa: ANN001
    environment = {**os.environ, "KACCY_NETWORK": "regtest", "KACCY_DATA_DIR": str(tmp_path),
                   "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/ln.db", **lnd_env(fake)}
    proc = subprocess.run([CLI, *args], env=environment, capture_output=True, text=True, timeout=60)
    (line,) = proc.stdout.strip().splitlines()
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(line)


def peer() -> str:
    return coincurve.PrivateKey().public_key.format().hex()


async def blocks(fake: FakeLndProcess, tmp_path, n: int) -> None:  # noqa: ANN001
    """The fake's simulated chain grows by `n` blocks."""
    status, info = await fake.control("chain", {})
    assert status == 200, info
    status, info = await fake.control("chain", {"block_height": info["block_height"] + n})
    assert status == 200, info


def by_point(fake: FakeLndProcess, tmp_path, point: str) -> dict | None:  # noqa: ANN001
    rc, out = cli(fake, tmp_path, "ln", "channels")
    assert rc == 0, out
    return next((c for c in out["channels"] if c["channel_point"] == point), None)


async def test_open_pending_active_close_closing_gone_and_audited(fake, tmp_path) -> None:  # noqa: ANN001
    node = peer()
    rc, opened = cli(fake, tmp_path, "ln", "channel", "open", "--node", f"{node}@127.0.0.1:9735",
                     "--local-sat", "200000", "--push-sat", "10000", "--fee-rate", "2", "--by", "alice")
    assert rc == 0 and set(opened) == {"channel_point", "state"} and opened["state"] == "pending", opened
    point = opened["channel_point"]
    shown = by_point(fake, tmp_path, point)
    assert (shown["state"], shown["capacity_sat"], shown["local_balance_sat"], shown["remote_pubkey"]) == \
        ("pending_open", 200_000, 190_000, node)
    rc, out = cli(fake, tmp_path, "ln", "channel", "close", point)
    assert rc == 1 and out["error"]["code"] == "lnd_error" and "pending" in out["error"]["message"]

    await blocks(fake, tmp_path, 3)
    assert by_point(fake, tmp_path, point)["state"] == "active"
    rc, closed = cli(fake, tmp_path, "ln", "channel", "close", point, "--by", "bob")
    assert rc == 0 and set(closed) == {"channel_point", "closing_txid"} and closed["channel_point"] == point
    shown = by_point(fake, tmp_path, point)
    assert (shown["state"], shown["closing_txid"]) == ("closing", closed["closing_txid"])
    await blocks(fake, tmp_path, 1)
    assert by_point(fake, tmp_path, point) is None

    rc, trail = cli(fake, tmp_path, "audit", "query", "--subject", point)
    assert rc == 0, trail
    entries = [(e["kind"], e["actor"]) for e in trail["entries"]]
    assert entries == [("channel_open_requested", "alice"), ("channel_close_requested", "bob")]


async def test_a_forced_close_waits_for_maturity(fake, tmp_path) -> None:  # noqa: ANN001
    rc, opened = cli(fake, tmp_path, "ln", "channel", "open", "--node", f"{peer()}@[::1]:9735", "--local-sat", "50000")
    assert rc == 0, opened
    await blocks(fake, tmp_path, 3)
    rc, closed = cli(fake, tmp_path, "ln", "channel", "close", opened["channel_point"], "--force")
    assert rc == 0, closed
    assert by_point(fake, tmp_path, opened["channel_point"])["state"] == "force_closing"


@pytest.mark.parametrize("args, code", [
    (("--node", "nonsense", "--local-sat", "100000"), "invalid_lightning_value"),
    (("--node", "02" + "ab" * 32 + "@host", "--local-sat", "100000"), "invalid_lightning_value"),
    (("--node", "02" + "ab" * 32 + "@127.0.0.1:9735", "--local-sat", "1000"), "invalid_amount"),
    (("--node", "02" + "ab" * 32 + "@127.0.0.1:9735", "--local-sat", "100000", "--push-sat", "100000"),
     "invalid_amount"),
    (("--node", "02" + "ab" * 32 + "@127.0.0.1:9735", "--local-sat", "100000", "--fee-rate", "1.5"),
     "invalid_amount"),
    (("--node", "02" + "ab" * 32 + "@127.0.0.1:9735", "--local-sat", "-5"), "usage"),
])
def test_bad_input_is_a_typed_error(fake, tmp_path, args, code) -> None:  # noqa: ANN001
    rc, out = cli(fake, tmp_path, "ln", "channel", "open", *args)
    assert (rc, out["error"]["code"]) == (2, code), out


def test_closing_what_is_not_a_channel_point(fake, tmp_path) -> None:  # noqa: ANN001
    rc, out = cli(fake, tmp_path, "ln", "channel", "close", "not-a-point")
    assert (rc, out["error"]["code"]) == (2, "invalid_lightning_value")
    rc, out = cli(fake, tmp_path, "ln", "channel", "close", "ab" * 32 + ":0")
    assert rc == 1 and "unable to find channel" in out["error"]["message"]


async def test_the_http_routes_are_for_admins(node, fake, tmp_path) -> None:  # noqa: ANN001
    shop = Shop(node, tmp_path, **lnd_env(fake))
    env = service_env(shop.env)
    admin, reader = api_key(env, "admin"), api_key(env, "read")
    service = Service(env, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            api, other = Client(session, service.url, admin), Client(session, service.url, reader)
            body = {"node": f"{peer()}@127.0.0.1:9735", "local_sat": 100_000, "fee_rate": 3, "by": "carol"}
            status, out = await other.request("POST", "/v1/lightning/channels", body)
            assert status == 403, out
            status, opened = await api.request("POST", "/v1/lightning/channels", body)
            assert status == 201 and opened["state"] == "pending", opened
            status, listed = await other.request("GET", "/v1/lightning/channels")
            assert status == 200
            assert [c["state"] for c in listed["channels"] if c["channel_point"] == opened["channel_point"]] == \
                ["pending_open"]
            status, out = await api.request("POST", "/v1/lightning/channels", {**body, "node": "nope"})
            assert status == 400 and out["error"]["code"] == "invalid_lightning_value"
            await blocks(fake, tmp_path, 3)
            point = opened["channel_point"]
            status, out = await other.request("POST", f"/v1/lightning/channels/{point}/close", {})
            assert status == 403
            status, out = await api.request("POST", f"/v1/lightning/channels/{point}/close", {"force": "yes"})
            assert status == 400
            status, out = await api.request("POST", "/v1/lightning/channels/not-a-point/close", {})
            assert status == 400 and out["error"]["code"] == "invalid_lightning_value", out
            status, closed = await api.request("POST", f"/v1/lightning/channels/{point}/close", {"force": True})
            assert status == 200 and set(closed) == {"channel_point", "closing_txid"}, closed
            status, events = await api.request("GET", "/v1/events")
            kinds = [(e["kind"], e["subject"]) for e in events["events"]]
            assert ("channel_open_requested", point) in kinds and ("channel_close_requested", point) in kinds
    finally:
        service.stop()
