"""Orders paid over Lightning, as users script them: `kaccy-bitcoin` processes against the
regtest node and the fake LND (its own process, over HTTPS); the invoice stream's resume and
the exactly-once events across a kill -9 of the monitor."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time


from tests.fake_lnd import FakeLndProcess  # the `fake` fixture: tests/conftest.py
from tests.payments_harness import CLI, Shop, kinds


def lightning_shop(node, tmp_path, fake: FakeLndProcess, **settings: str) -> Shop:  # noqa: ANN001
    return Shop(node, tmp_path, KACCY_LND_REST_URL=fake.rest_url, KACCY_LND_MACAROON=fake.info["macaroon"],
                KACCY_LND_TLS_CERT=fake.info["tls_cert"], **settings)


def all_events(shop: Shop) -> list[dict]:
    return shop.cli("events", "--limit", "1000")[1]["events"]


async def test_an_order_paid_over_lightning_end_to_end(node, tmp_path, fake) -> None:  # noqa: ANN001
    shop = lightning_shop(node, tmp_path, fake)
    order = shop.order("ln-1", 50_000)
    rc, made = shop.cli("ln", "invoice", "create", "ln-1", "--amount-msat", "50000000", "--expiry", "600")
    assert set(made) == {"order_id", "payment_request", "payment_hash", "state"}
    assert made["order_id"] == "ln-1" and made["state"] == "open" and made["payment_request"].startswith("lnbcrt")
    # Asking again gives the same invoice; another amount while it is open is refused.
    assert shop.cli("ln", "invoice", "create", "ln-1", "--amount-msat", "50000000")[1] == made
    rc, out = shop.cli("ln", "invoice", "create", "ln-1", "--amount-msat", "1000", check=False)
    assert rc == 2 and out["error"]["code"] == "invoice_conflict"
    assert shop.show("ln-1")["lightning"] == {"payment_hash": made["payment_hash"], "state": "open"}

    await fake.pay(made["payment_request"])
    events = shop.poll()
    assert kinds(events) == ["invoice_settled", "payment_finalized", "order_paid"]
    settled = events[0]
    assert (settled["payment_hash"], settled["amount_paid_msat"]) == (made["payment_hash"], 50_000_000)
    assert events[2]["payment_hashes"] == [made["payment_hash"]]
    view = shop.show("ln-1")
    assert (view["status"], view["match"], view["received_sat"]) == ("finalized", "exact", 50_000)
    assert view["lightning"] == {"payment_hash": made["payment_hash"], "state": "settled"}
    shown = shop.cli("ln", "invoice", "show", "ln-1")[1]
    assert set(shown) == {"order_id", "payment_hash", "state", "amount_msat", "settled_at", "payment_request",
                          "expires_at"}
    assert shown["payment_request"] == made["payment_request"]
    assert (shown["state"], shown["amount_msat"]) == ("settled", 50_000_000) and shown["settled_at"]
    assert shop.poll() == []   # nothing new: the settlement is not counted twice

    # The customer also pays on chain: reported as an overpayment, not lost.
    await node.send(order["address"], 50_000)
    late = shop.poll()
    assert "payment_late" in kinds(late) and "order_overpaid" in kinds(late)
    view = shop.show("ln-1")
    assert (view["received_sat"], view["match"], view["status"]) == (100_000, "overpaid", "finalized")
    # A paid order takes no new invoice.
    rc, out = shop.cli("ln", "invoice", "create", "ln-1", "--amount-msat", "5000", check=False)
    assert rc == 2 and out["error"]["code"] == "order_closed"
    assert kinds(all_events(shop)).count("order_paid") == 1


async def test_onchain_first_then_lightning_is_an_overpayment(node, tmp_path, fake) -> None:  # noqa: ANN001
    shop = lightning_shop(node, tmp_path, fake, KACCY_CONFIRMATIONS="1,1,1")
    order = shop.order("both-1", 20_000)
    made = shop.cli("ln", "invoice", "create", "both-1", "--amount-msat", "20000000")[1]
    await node.send(order["address"], 20_000)
    await node.mine(1)
    assert "order_paid" in kinds(shop.poll())
    assert shop.show("both-1")["status"] == "finalized"
    await fake.pay(made["payment_request"])      # the invoice was still open: the customer paid twice
    events = shop.poll()
    assert {"invoice_settled", "payment_late", "order_overpaid"} <= set(kinds(events))
    view = shop.show("both-1")
    assert (view["received_sat"], view["match"]) == (40_000, "overpaid")
    assert kinds(all_events(shop)).count("order_paid") == 1


async def test_expiry_and_refusals(node, tmp_path, fake) -> None:  # noqa: ANN001
    shop = lightning_shop(node, tmp_path, fake)
    shop.order("exp-1", 10_000)
    made = shop.cli("ln", "invoice", "create", "exp-1", "--amount-msat", "10000000", "--expiry", "1")[1]
    deadline = time.monotonic() + 10
    while True:   # `ln invoice show` asks LND about an open invoice; LND expires it by time
        shown = shop.cli("ln", "invoice", "show", "exp-1")[1]
        if shown["state"] != "open" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (shown["state"], shown["settled_at"]) == ("expired", None)
    assert [e["reason"] for e in all_events(shop) if e["kind"] == "invoice_expired"] == ["expired"]
    assert shop.poll() == []
    assert shop.show("exp-1")["lightning"]["state"] == "expired"
    # A new invoice can be made once the old one expired.
    again = shop.cli("ln", "invoice", "create", "exp-1", "--amount-msat", "10000000")[1]
    assert again["payment_hash"] != made["payment_hash"] and again["state"] == "open"

    for args, code in ((("ln", "invoice", "create", "nope", "--amount-msat", "1000"), "not_found"),
                       (("ln", "invoice", "show", "nope"), "not_found"),
                       (("ln", "invoice", "create", "exp-1", "--amount-msat", "0"), "usage"),
                       (("ln", "invoice", "create", "exp-1", "--amount-msat", "1.5"), "usage"),
                       (("ln", "invoice", "create", "exp-1", "--amount-msat", "10", "--expiry", "0"), "usage")):
        rc, out = shop.cli(*args, check=False)
        assert rc == 2 and out["error"]["code"] == code, (args, out)
    shop.order("none-1", 1_000)
    rc, out = shop.cli("ln", "invoice", "show", "none-1", check=False)
    assert rc == 2 and out["error"]["code"] == "not_found" and "no Lightning invoice" in out["error"]["message"]


async def test_canceled_at_lnd_reads_canceled(node, tmp_path, fake) -> None:  # noqa: ANN001
    from kaccy_bitcoin.adapters.lnd.client import LndRestClient
    from kaccy_bitcoin.adapters.lnd.node import LndNode
    from kaccy_bitcoin.adapters.memory.clock import SystemClock

    shop = lightning_shop(node, tmp_path, fake)
    shop.order("cxl-1", 10_000)
    made = shop.cli("ln", "invoice", "create", "cxl-1", "--amount-msat", "10000000")[1]
    async with LndNode(LndRestClient(fake.rest_url, macaroon_path=fake.info["macaroon"],
                                     tls_cert_path=fake.info["tls_cert"]), SystemClock()) as lnd:
        await lnd.cancel_invoice(made["payment_hash"])
    assert kinds(shop.poll()) == ["invoice_expired"]
    assert shop.cli("ln", "invoice", "show", "cxl-1")[1]["state"] == "canceled"
    assert shop.show("cxl-1")["status"] == "pending"


def _start_monitor(shop: Shop, log) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen([CLI, "monitor", "--interval", "60"], env=shop.env, stdout=subprocess.DEVNULL,
                            stderr=log)


async def _wait_for(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_the_stream_settles_orders_and_resumes_exactly_once_across_kill_and_lnd_restart(
        node, tmp_path, fake) -> None:  # noqa: ANN001
    shop = lightning_shop(node, tmp_path, fake)
    invoices = {}
    for n in range(4):
        shop.order(f"s-{n}", 1_000 + n)
        invoices[n] = shop.cli("ln", "invoice", "create", f"s-{n}", "--amount-msat", str((1_000 + n) * 1000))[1]
    with open(tmp_path / "monitor.log", "wb") as log:
        monitor = _start_monitor(shop, log)
        try:
            # The poll interval is 60 s: only the invoice stream can settle this one in time.
            await asyncio.sleep(1.5)
            await fake.pay(invoices[0]["payment_request"])
            await _wait_for(lambda: shop.show("s-0")["status"] == "finalized")
            # kill -9 right after LND settles the next one: before or after our commit, it counts once.
            await fake.pay(invoices[1]["payment_request"])
            monitor.send_signal(signal.SIGKILL)
            monitor.wait(10)
            # While nobody listens: LND settles one and restarts (its state survives, as LND's does).
            await fake.pay(invoices[2]["payment_request"])
            fake.stop()
            fake.start()
            monitor = _start_monitor(shop, log)
            await _wait_for(lambda: all(shop.show(f"s-{n}")["status"] == "finalized" for n in range(3)))
            # LND goes down under a running monitor and comes back: the stream reconnects.
            fake.stop()
            await asyncio.sleep(1)
            fake.start()
            await fake.pay(invoices[3]["payment_request"])
            await _wait_for(lambda: shop.show("s-3")["status"] == "finalized", timeout=60)
        finally:
            monitor.send_signal(signal.SIGTERM)
            monitor.wait(20)
    events = all_events(shop)
    for n in range(4):
        mine = [e["kind"] for e in events if e["subject"] == f"s-{n}"]
        assert mine.count("invoice_settled") == 1 and mine.count("order_paid") == 1, (n, mine)
    assert len({e["id"] for e in events}) == len(events)


async def test_sync_is_idempotent_and_ignores_other_invoices(node, tmp_path, fake) -> None:  # noqa: ANN001
    """The same settled report applied twice (a replay after a reconnect, two monitors) changes
    nothing the second time; reports of invoices that are not ours only move the cursors."""
    shop = lightning_shop(node, tmp_path, fake)
    shop.order("idem-1", 3_000)
    made = shop.cli("ln", "invoice", "create", "idem-1", "--amount-msat", "3000000")[1]
    await fake.pay(made["payment_request"])
    elsewhere = await fake.invoice_elsewhere(1_000, "not ours")
    c = shop.container()
    try:
        sync = await c.services.invoice_sync()
        node_ = await c.gateways.lightning()
        report = await node_.lookup_invoice(made["payment_hash"])
        first, second = await asyncio.gather(sync.apply([report], settle_index=report.settle_index),
                                             sync.apply([report], settle_index=report.settle_index))
        assert sorted(kinds([e.to_dict() for e in first + second])) == sorted(
            ["invoice_settled", "payment_finalized", "order_paid"])
        assert await sync.apply([report]) == []
        assert sync.cursors()[1] == report.settle_index
        assert elsewhere["payment_hash"] not in json.dumps([e.to_dict() for e in first + second])
    finally:
        await c.shutdown_resources()
    assert shop.show("idem-1")["received_sat"] == 3_000
