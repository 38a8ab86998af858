"""The LND adapter over real HTTPS against the fake LND, run as its own process."""
from __future__ import annotations

import asyncio
import hashlib
import pathlib
import time

import bolt11
import coincurve
import pytest

from kaccy_bitcoin.adapters.lnd.client import LndRestClient
from kaccy_bitcoin.adapters.lnd.errors import (
    LndAuthError,
    LndError,
    LndInvoiceNotFound,
    LndTlsError,
    LndUnreachable,
)
from kaccy_bitcoin.adapters.lnd.fake.tls import ensure_certificate
from kaccy_bitcoin.adapters.lnd.node import LndNode
from kaccy_bitcoin.adapters.memory.clock import SystemClock
from kaccy_bitcoin.domain.errors import InvalidLightningValue, NotFound
from kaccy_bitcoin.domain.invoice_state import InvoiceState
from kaccy_bitcoin.domain.lightning import CancelReason, PaymentStatus
from kaccy_bitcoin.domain.money import MilliSatoshis
from tests.fake_lnd import FakeLndProcess, free_port

FEE_LIMIT = MilliSatoshis(50_000)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory):
    process = FakeLndProcess(tmp_path_factory.mktemp("fake-lnd"))
    process.start()
    yield process
    process.stop()


def make_node(fake: FakeLndProcess, *, macaroon: str | None = None, cert: str | None = None,
              url: str | None = None, **client_options) -> LndNode:
    client = LndRestClient(url or fake.rest_url, macaroon_path=macaroon or fake.info["macaroon"],
                           tls_cert_path=cert or fake.info["tls_cert"], **client_options)
    return LndNode(client, SystemClock())


@pytest.fixture
async def node(fake: FakeLndProcess):
    async with make_node(fake) as lnd:
        yield lnd


async def poll(condition, timeout: float = 10.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def test_starts_with_one_channel_half_local(node: LndNode) -> None:
    (channel,) = await node.channels()
    assert (channel.capacity_sat, channel.local_balance_sat, channel.remote_balance_sat) == (1_000_000, 500_000, 500_000)
    assert channel.active and channel.channel_point is not None
    balance = await node.channel_balance()
    assert (balance.local.value, balance.remote.value) == (500_000_000, 500_000_000)


async def test_create_pay_settle_seen_by_lookup_and_subscription(node: LndNode, fake: FakeLndProcess) -> None:
    before = await node.channel_balance()
    anchor = await node.create_invoice(MilliSatoshis(1_000), "anchor", 600)
    invoice = await node.create_invoice(MilliSatoshis(12_345_678), "order 1", 600)
    assert invoice.state is InvoiceState.OPEN and invoice.add_index > 0 and invoice.amount.value == 12_345_678
    assert invoice.payment_request.startswith("lnbcrt")

    # Replaying what was added after the anchor proves the subscription is registered
    # (add index 0 would mean live only).
    stream = node.subscribe_invoices(add_index=anchor.add_index, settle_index=0)
    first = await asyncio.wait_for(anext(stream), 10)
    assert (first.payment_hash, first.state) == (invoice.payment_hash, InvoiceState.OPEN)
    await fake.pay(invoice.payment_request)
    settled = await asyncio.wait_for(anext(stream), 10)
    await stream.aclose()
    assert (settled.payment_hash, settled.state) == (invoice.payment_hash, InvoiceState.SETTLED)
    assert settled.settle_index > 0 and settled.amount_paid.value == 12_345_678

    looked_up = await node.lookup_invoice(invoice.payment_hash)
    assert looked_up.state is InvoiceState.SETTLED and looked_up.settled_at is not None
    assert looked_up == await node.lookup_invoice_v1(invoice.payment_hash)
    after = await node.channel_balance()
    assert after.local.value - before.local.value == 12_345_678


async def test_payment_request_is_real_bolt11(node: LndNode) -> None:
    invoice = await node.create_invoice(MilliSatoshis(2_500_001), "bolt11 check", 900)
    decoded = bolt11.decode(invoice.payment_request)
    assert decoded.currency == "bcrt"
    assert decoded.amount_msat == 2_500_001
    assert decoded.payment_hash == invoice.payment_hash
    assert decoded.expiry == 900 and decoded.description == "bolt11 check"
    assert decoded.date == int(invoice.created_at.timestamp())
    by_lnd = await node.decode_payment_request(invoice.payment_request)
    assert by_lnd.destination == decoded.payee
    assert (by_lnd.payment_hash, by_lnd.amount.value, by_lnd.expiry_seconds) == (invoice.payment_hash, 2_500_001, 900)
    assert by_lnd.description == "bolt11 check" and by_lnd.cltv_expiry == decoded.min_final_cltv_expiry


async def test_open_invoice_expires_by_time(node: LndNode, fake: FakeLndProcess) -> None:
    invoice = await node.create_invoice(MilliSatoshis(1_000), "short", 1)

    async def expired():
        current = await node.lookup_invoice(invoice.payment_hash)
        return current if current.state is InvoiceState.EXPIRED else None

    current = await poll(expired)
    assert current and current.cancel_reason is CancelReason.EXPIRED
    status, body = await fake.control("pay", {"payment_request": invoice.payment_request})
    assert status == 400 and body["message"] == "invoice expired"


async def test_cancel_and_unknown_invoice(node: LndNode, fake: FakeLndProcess) -> None:
    invoice = await node.create_invoice(MilliSatoshis(5_000), "to cancel", 3600)
    await node.cancel_invoice(invoice.payment_hash)
    canceled = await node.lookup_invoice(invoice.payment_hash)
    assert canceled.state is InvoiceState.EXPIRED and canceled.cancel_reason is CancelReason.CANCELED
    status, _ = await fake.control("pay", {"payment_request": invoice.payment_request})
    assert status == 400

    settled = await node.create_invoice(MilliSatoshis(5_000), "paid", 3600)
    await fake.pay(settled.payment_request)
    with pytest.raises(LndError, match="already settled"):
        await node.cancel_invoice(settled.payment_hash)

    unknown = hashlib.sha256(b"no such invoice").hexdigest()
    with pytest.raises(LndInvoiceNotFound) as caught:
        await node.lookup_invoice(unknown)
    assert isinstance(caught.value, NotFound) and caught.value.http_status == 404
    with pytest.raises(InvalidLightningValue):
        await node.lookup_invoice("zz" * 32)


async def test_list_with_index_offset(node: LndNode, fake: FakeLndProcess) -> None:
    made = [await node.create_invoice(MilliSatoshis(1_000 + n), f"list {n}", 3600) for n in range(3)]
    start = made[0].add_index
    page = await node.list_invoices(index_offset=start)
    assert [i.payment_hash for i in page.invoices] == [m.payment_hash for m in made[1:]]
    one = await node.list_invoices(index_offset=start - 1, max_invoices=1)
    assert [i.add_index for i in one.invoices] == [start] and one.last_index_offset == start
    following = await node.list_invoices(index_offset=one.last_index_offset, max_invoices=1)
    assert [i.add_index for i in following.invoices] == [start + 1]
    newest = await node.list_invoices(index_offset=0, max_invoices=2, reverse=True)
    assert [i.payment_hash for i in newest.invoices] == [m.payment_hash for m in made[1:]]
    await fake.pay(made[1].payment_request)
    pending = await node.list_invoices(index_offset=start - 1, pending_only=True)
    assert [i.payment_hash for i in pending.invoices] == [made[0].payment_hash, made[2].payment_hash]


async def test_pay_an_invoice_made_elsewhere(node: LndNode, fake: FakeLndProcess) -> None:
    before = await node.channel_balance()
    elsewhere = await fake.invoice_elsewhere(20_000_000)
    updates = [u async for u in node.pay_updates(elsewhere["payment_request"], max_fee=FEE_LIMIT)]
    assert [u.status for u in updates] == [PaymentStatus.IN_FLIGHT, PaymentStatus.SUCCEEDED]
    paid = updates[-1]
    assert paid.payment_hash == elsewhere["payment_hash"] and paid.amount.value == 20_000_000
    assert paid.fee.value == 1_000 + 20   # the peer's base fee and 1 ppm
    assert hashlib.sha256(bytes.fromhex(paid.preimage)).hexdigest() == paid.payment_hash
    after = await node.channel_balance()
    assert before.local.value - after.local.value == 20_000_000 + paid.fee.value
    with pytest.raises(LndError, match="already paid") as caught:
        await node.pay(elsewhere["payment_request"], max_fee=FEE_LIMIT)
    assert caught.value.http_status == 409


async def test_pay_fails_with_lnd_reasons(node: LndNode, fake: FakeLndProcess) -> None:
    before = await node.channel_balance()
    too_big = await fake.invoice_elsewhere(before.local.value + 1_000)
    failed = await node.pay(too_big["payment_request"], max_fee=FEE_LIMIT)
    assert failed.status is PaymentStatus.FAILED
    assert failed.failure_reason == "FAILURE_REASON_INSUFFICIENT_BALANCE" and failed.fee.value == 0
    small = await fake.invoice_elsewhere(10_000)
    no_route = await node.pay(small["payment_request"], max_fee=MilliSatoshis(999))
    assert no_route.failure_reason == "FAILURE_REASON_NO_ROUTE"
    own = await node.create_invoice(MilliSatoshis(10_000), "self", 600)
    with pytest.raises(LndError, match="self-payments"):
        await node.pay(own.payment_request, max_fee=FEE_LIMIT)
    assert (await node.channel_balance()).local == before.local


async def test_open_and_close_a_channel(node: LndNode, fake: FakeLndProcess) -> None:
    peer = coincurve.PrivateKey().public_key.format().hex()
    with pytest.raises(LndError, match="not online"):   # LND opens only to a connected peer
        await node.open_channel(peer, 100_000)
    await node.connect_peer(peer, "127.0.0.1:9735")
    await node.connect_peer(peer, "127.0.0.1:9735")       # connected already: no error
    point = await node.open_channel(peer, 100_000, push_sat=10_000, sat_per_vbyte=3)
    # Pending until the funding transaction has its confirmations, then open.
    assert point not in [c.channel_point for c in await node.channels()]
    (opening,) = [c for c in await node.pending_channels() if c.channel_point == point]
    assert (opening.state, opening.remote_pubkey, opening.capacity_sat, opening.local_balance_sat) == \
        ("pending_open", peer, 100_000, 90_000)
    with pytest.raises(LndError, match="pending"):
        await node.close_channel(point)
    with pytest.raises(LndError, match="too small"):
        await node.open_channel(peer, 1_000)
    height = (await node.node_info()).block_height
    assert (await fake.control("chain", {"block_height": height + 3}))[0] == 200
    opened = next(c for c in await node.channels() if c.channel_point == point)
    assert (opened.state, opened.active, opened.local_balance_sat) == ("active", True, 90_000)
    closing_txid = await node.close_channel(point)
    assert len(closing_txid) == 64
    assert point not in [c.channel_point for c in await node.channels()]
    (closing,) = [c for c in await node.pending_channels() if c.channel_point == point]
    assert (closing.state, closing.closing_txid) == ("closing", closing_txid)
    assert (await fake.control("chain", {"block_height": height + 4}))[0] == 200
    assert point not in [c.channel_point for c in await node.pending_channels()]


async def test_wrong_macaroon_is_a_clear_auth_error(fake: FakeLndProcess, tmp_path: pathlib.Path) -> None:
    wrong = tmp_path / "admin.macaroon"
    wrong.write_bytes(b"\x02" + bytes(31))
    async with make_node(fake, macaroon=str(wrong)) as lnd:
        with pytest.raises(LndAuthError) as caught:
            await lnd.channels()
        assert caught.value.code == "lnd_auth_failed" and "verification failed" in str(caught.value)
        assert lnd._client.stats["retries"] == 0


async def test_wrong_certificate_is_refused(fake: FakeLndProcess, tmp_path: pathlib.Path) -> None:
    other_cert, _ = ensure_certificate(tmp_path)
    async with make_node(fake, cert=str(other_cert)) as lnd:
        with pytest.raises(LndTlsError) as caught:
            await lnd.channels()
        assert caught.value.code == "lnd_tls_error" and lnd._client.stats["retries"] == 0


async def test_lnd_down_retries_then_clear_error(fake: FakeLndProcess) -> None:
    nobody = f"https://127.0.0.1:{free_port()}"
    async with make_node(fake, url=nobody, retries=3, backoff=0.01) as lnd:
        with pytest.raises(LndUnreachable, match="after 3 attempts") as caught:
            await lnd.channels()
        assert caught.value.code == "lnd_unreachable" and lnd._client.stats["retries"] == 2


async def test_subscription_resumes_after_restart_without_loss_or_repeat(tmp_path: pathlib.Path) -> None:
    fake = FakeLndProcess(tmp_path / "lnd")
    fake.start()
    try:
        async with make_node(fake, retries=12, backoff=0.2, max_backoff=1.0) as node:
            anchor, a, b, c = [await node.create_invoice(MilliSatoshis(7_000 + n), f"r{n}", 3600) for n in range(4)]
            cursor = {"add": 0, "settle": 0}
            seen: list[tuple[str, InvoiceState]] = []

            async def consume(stream) -> None:
                async for update in stream:
                    seen.append((update.payment_hash, update.state))
                    cursor["add"] = max(cursor["add"], update.add_index)
                    cursor["settle"] = max(cursor["settle"], update.settle_index)

            first = asyncio.create_task(consume(node.subscribe_invoices(add_index=anchor.add_index, settle_index=0)))
            assert await poll(lambda: asyncio.sleep(0, len(seen) == 3))
            await fake.pay(a.payment_request)
            assert await poll(lambda: asyncio.sleep(0, (a.payment_hash, InvoiceState.SETTLED) in seen))

            fake.stop()
            with pytest.raises(LndUnreachable):
                await asyncio.wait_for(first, 10)
            # While LND is down a call keeps retrying, and succeeds once it is back.
            retrying = asyncio.create_task(node.lookup_invoice(a.payment_hash))
            await asyncio.sleep(0.3)
            fake.start()
            assert (await asyncio.wait_for(retrying, 30)).state is InvoiceState.SETTLED
            assert node._client.stats["retries"] >= 1

            # Settled and added while our subscriber is disconnected.
            await fake.pay(c.payment_request)
            await fake.pay(b.payment_request)
            d = await node.create_invoice(MilliSatoshis(9_000), "added while away", 3600)
            seen.clear()
            resumed = asyncio.create_task(consume(node.subscribe_invoices(cursor["add"], cursor["settle"])))
            assert await poll(lambda: asyncio.sleep(0, len(seen) >= 3))
            await asyncio.sleep(0.3)   # anything replayed twice would have arrived by now
            resumed.cancel()
            assert seen == [(d.payment_hash, InvoiceState.OPEN), (c.payment_hash, InvoiceState.SETTLED),
                            (b.payment_hash, InvoiceState.SETTLED)]
    finally:
        fake.stop()


async def test_getinfo_answers_as_lnd_does_and_follows_the_simulated_chain(fake: FakeLndProcess, node) -> None:  # noqa: ANN001
    raw = await node._client.request("GET", "/v1/getinfo")
    # LND's GetInfoResponse: uint32 counts and height as JSON numbers, the int64 timestamp as a string.
    for name in ("num_active_channels", "num_inactive_channels", "num_pending_channels", "num_peers", "block_height"):
        assert isinstance(raw[name], int) and not isinstance(raw[name], bool), name
    assert isinstance(raw["best_header_timestamp"], str) and int(raw["best_header_timestamp"]) > 0
    assert raw["chains"] == [{"chain": "bitcoin", "network": "regtest"}] and raw["testnet"] is False
    assert raw["synced_to_chain"] is True and isinstance(raw["alias"], str) and len(raw["block_hash"]) == 64
    assert set(raw["features"]["0"]) == {"name", "is_required", "is_known"}
    info = await node.node_info()
    channels = await node.channels()
    assert info.pubkey == raw["identity_pubkey"] and coincurve.PublicKey(bytes.fromhex(info.pubkey))
    assert info.active_channels == sum(c.active for c in channels) >= 1
    assert info.networks == ("bitcoin/regtest",) and info.synced_to_chain is True
    status, view = await fake.control("chain", {"block_height": info.block_height + 5, "synced_to_chain": False})
    assert status == 200, view
    behind = await node.node_info()
    assert (behind.block_height, behind.synced_to_chain) == (info.block_height + 5, False)
    status, view = await fake.control("chain", {"synced_to_chain": True})
    assert status == 200 and (await node.node_info()).synced_to_chain is True
    status, refused = await fake.control("chain", {"synced_to_chain": "yes"})
    assert status == 400 and refused["code"] == 3
