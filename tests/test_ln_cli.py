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
    return cli(fake, tmp_path, "ln", *args, **env)


def cli(fake: FakeLndProcess, tmp_path, *args: str, **env: str) -> tuple[int, dict]:  # noqa: ANN001
    environment = {**os.environ, "KACCY_NETWORK": "regtest", "KACCY_DATA_DIR": str(tmp_path),
                   "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/ln.db", "KACCY_LND_REST_URL": fake.rest_url,
                   "KACCY_LND_MACAROON": fake.info["macaroon"], "KACCY_LND_TLS_CERT": fake.info["tls_cert"], **env}
    proc = subprocess.run([CLI, *args], env=environment, capture_output=True, text=True, timeout=60)
    (line,) = proc.stdout.strip().splitlines()
    return proc.returncode, json.loads(line)


PAYOUT_KEYS = {"payment_id", "payment_hash", "state", "amount_msat", "max_fee_msat", "fee_msat", "failure_reason",
               "destination", "risk"}


def test_channels_shape(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    rc, out = ln(fake, tmp_path, "channels")
    assert rc == 0
    (channel,) = out["channels"]
    assert set(channel) == {"channel_id", "channel_point", "remote_pubkey", "state", "capacity_sat",
                            "local_balance_sat", "remote_balance_sat", "active"}
    assert channel["capacity_sat"] == 1_000_000 and channel["active"] is True and channel["state"] == "active"


async def test_pay_succeeds_then_fails_above_the_local_balance(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    before = ln(fake, tmp_path, "channels")[1]["channels"][0]["local_balance_sat"]
    invoice = await fake.invoice_elsewhere(25_000_000, "supplier")
    rc, out = ln(fake, tmp_path, "pay", invoice["payment_request"], "--max-fee-sat", "50")
    assert rc == 0 and set(out) == PAYOUT_KEYS
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


def balance(fake: FakeLndProcess, tmp_path) -> int:  # noqa: ANN001
    return ln(fake, tmp_path, "channels")[1]["channels"][0]["local_balance_sat"]


async def test_ln_pay_over_a_users_limit_is_refused_and_nothing_is_paid(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    """The user's limits count what a payout may cost (amount + fee limit, rounded up); a payment
    LND says FAILED gives its claim back, a succeeded one keeps what it paid."""
    assert cli(fake, tmp_path, "limits", "set", "--user", "carol", "--daily-sat", "100000")[0] == 0
    before = balance(fake, tmp_path)
    over = await fake.invoice_elsewhere(100_000_000, "just over: the fee limit counts too")
    rc, out = ln(fake, tmp_path, "pay", over["payment_request"], "--user", "carol")
    assert rc == 2 and (out["error"]["code"], out["error"]["limit"], out["error"]["remaining_sat"]) == (
        "limit_exceeded", "daily", 100_000)
    assert balance(fake, tmp_path) == before                                  # nothing reached the fake LND
    unroutable = await fake.invoice_elsewhere(90_000_000, "no route within a zero fee limit")
    rc, failed = ln(fake, tmp_path, "pay", unroutable["payment_request"], "--max-fee-sat", "0", "--user", "carol")
    assert rc == 0 and (failed["state"], failed["failure_reason"]) == ("failed", "FAILURE_REASON_NO_ROUTE")
    paid = await fake.invoice_elsewhere(60_000_123, "fits once the failed one gave its claim back")
    rc, out = ln(fake, tmp_path, "pay", paid["payment_request"], "--user", "carol")
    assert rc == 0 and out["state"] == "succeeded" and out["user"] == "carol", out
    assert out["max_fee_msat"] == 60_000_123 * 5_000 // 1_000_000                  # the default: the ppm cap
    spent = -(-(60_000_123 + out["fee_msat"]) // 1000)                           # rounded up to the sat
    audit = cli(fake, tmp_path, "audit", "query", "--subject", out["payment_id"])[1]["entries"]
    assert (audit[0]["kind"], audit[0]["data"]["amount_sat"], audit[0]["data"]["claim_sat"]) == (
        "ln_payment", 60_001, -(-(60_000_123 + out["max_fee_msat"]) // 1000))   # in sat, rounded up
    rc, out = ln(fake, tmp_path, "pay", (await fake.invoice_elsewhere(50_000_000))["payment_request"],
                 "--user", "carol")
    assert rc == 2 and (out["error"]["code"], out["error"]["remaining_sat"]) == ("limit_exceeded", 100_000 - spent)
    assert balance(fake, tmp_path) < before


async def test_a_max_fee_above_the_ppm_cap_is_refused(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    invoice = await fake.invoice_elsewhere(20_000_000, "fee cap")
    rc, out = ln(fake, tmp_path, "pay", invoice["payment_request"], "--max-fee-sat", "101")
    assert rc == 2 and out["error"]["code"] == "fee_too_high" and "100 sat" in out["error"]["message"]
    assert (out["error"]["max_fee_sat"], out["error"]["max_fee_msat"]) == (100, 100_000)
    rc, out = ln(fake, tmp_path, "pay", invoice["payment_request"], "--max-fee-sat", "1000000000")
    assert rc == 2 and out["error"]["code"] == "fee_too_high"
    rc, out = ln(fake, tmp_path, "pay", invoice["payment_request"], "--max-fee-sat", "101",
                 KACCY_LN_MAX_FEE_PPM="10000")
    assert rc == 0 and out["state"] == "succeeded" and out["max_fee_msat"] == 101_000
    rc, out = ln(fake, tmp_path, "pay", invoice["payment_request"])
    assert rc == 2 and out["error"]["code"] == "payment_conflict"              # paid already: not twice


async def test_a_risky_ln_pay_is_held_until_approved_then_paid(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    invoice = await fake.invoice_elsewhere(15_000_000, "risky")
    before = balance(fake, tmp_path)
    rc, held = ln(fake, tmp_path, "pay", invoice["payment_request"], "--user", "mallory", KACCY_REVIEW_SCORE="15")
    assert rc == 0 and held["state"] == "held" and held["risk"] == {"score": 15, "reasons": ["new_destination"]}
    pid = held["payment_id"]
    rc, out = ln(fake, tmp_path, "send", pid)
    assert rc == 2 and out["error"]["code"] == "withdrawal_held"
    assert balance(fake, tmp_path) == before                                  # nothing paid while held
    rc, out = cli(fake, tmp_path, "withdraw", "approve", pid, "--by", "olivia")
    assert rc == 0 and out == {"payment_id": pid, "state": "pending"}
    rc, paid = ln(fake, tmp_path, "send", pid)
    assert rc == 0 and paid["state"] == "succeeded" and paid["approved_by"] == "olivia"
    assert balance(fake, tmp_path) < before
    assert ln(fake, tmp_path, "show", pid)[1] == paid
    found = cli(fake, tmp_path, "audit", "query", "--subject", pid)[1]["entries"]
    assert [(e["kind"], e["actor"]) for e in found] == [
        ("ln_payment", "system"), ("ln_payment_held", "system"), ("ln_payment_approved", "olivia"),
        ("ln_payment_sent", "system"), ("ln_payment_succeeded", "system")]
    assert found[0]["data"]["user"] == "mallory" and found[0]["data"]["claim_sat"] == 15_075
    assert found[-1]["data"]["fee_msat"] == paid["fee_msat"]
    assert cli(fake, tmp_path, "audit", "verify")[1]["ok"] is True
    # a second held one is cancelled instead: its claim comes back
    other = await fake.invoice_elsewhere(5_000_000, "refused by the operator")
    rc, held = ln(fake, tmp_path, "pay", other["payment_request"], "--user", "trudy", KACCY_REVIEW_SCORE="15")
    assert held["state"] == "held"
    rc, out = cli(fake, tmp_path, "withdraw", "cancel", held["payment_id"], "--by", "olivia")
    assert rc == 0 and out == {"payment_id": held["payment_id"], "state": "cancelled"}


async def test_a_payout_left_in_flight_is_settled_by_ln_send(fake: FakeLndProcess, tmp_path) -> None:  # noqa: ANN001
    """A process that committed `ln_payment_sent` and died: `ln send` asks LND where the payment
    stands (paid: recorded, never paid twice) and pays it only if LND never started it."""
    from kaccy_bitcoin.adapters.lnd.client import LndRestClient
    from kaccy_bitcoin.adapters.lnd.node import LndNode
    from kaccy_bitcoin.adapters.memory.clock import SystemClock
    from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine

    invoices = [await fake.invoice_elsewhere(7_000_000, f"crash {n}") for n in range(2)]
    ids = []
    for invoice in invoices:                                   # held (score 0 holds all), then approved
        held = ln(fake, tmp_path, "pay", invoice["payment_request"], "--user", "zed", KACCY_REVIEW_SCORE="0")[1]
        assert held["state"] == "held"
        assert cli(fake, tmp_path, "withdraw", "approve", held["payment_id"], "--by", "olivia")[0] == 0
        ids.append(held["payment_id"])
    engine = make_engine(f"sqlite:///{tmp_path}/ln.db")
    uow = SqlUnitOfWorkFactory(engine)
    for pid in ids:                                            # committed as sent, then the crash
        with uow() as u:
            payout = u.ln_payouts.get(pid)
            u.record([payout.send(SystemClock().now())])
            u.ln_payouts.save(payout)
            u.commit()
    engine.dispose()
    node = LndNode(LndRestClient(fake.rest_url, macaroon_path=fake.info["macaroon"],
                                 tls_cert_path=fake.info["tls_cert"]), SystemClock())
    try:
        paid = await node.pay(invoices[0]["payment_request"], max_fee=payout.max_fee)   # LND had the first
    finally:
        await node.close()
    assert ln(fake, tmp_path, "show", ids[0])[1]["state"] == "in_flight"
    before = balance(fake, tmp_path)
    rc, out = ln(fake, tmp_path, "send", ids[0])
    assert rc == 0 and (out["state"], out["fee_msat"]) == ("succeeded", paid.fee.value)
    assert balance(fake, tmp_path) == before                                  # not paid twice
    rc, out = ln(fake, tmp_path, "send", ids[1])                             # LND never had the second
    assert rc == 0 and out["state"] == "succeeded" and balance(fake, tmp_path) < before
    kinds = [e["kind"] for e in cli(fake, tmp_path, "audit", "query", "--subject", ids[0])[1]["entries"]]
    assert kinds[-2:] == ["ln_payment_sent", "ln_payment_succeeded"]
