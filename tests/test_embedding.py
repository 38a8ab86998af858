"""The embedding API (`from kaccy_bitcoin import KaccyBitcoin`): the README's example run as it
is written, typed results and typed errors for the use cases, on the regtest node."""
from __future__ import annotations

import asyncio
import os
import pathlib
import re
import sys

import pytest
from dependency_injector import providers

from kaccy_bitcoin import (
    ConfigError,
    InsufficientFunds,
    InternalError,
    KaccyBitcoin,
    KaccyError,
    NotFound,
    OrderCreated,
    Withdrawal,
    WithdrawalStep,
)
from kaccy_bitcoin.domain.errors import InvalidFeeRate
from tests.payments_harness import CLI, Shop

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.node


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Embedding"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def kaccy_env(shop: Shop) -> dict[str, str]:
    return {k: v for k, v in shop.env.items() if k.startswith("KACCY_")}


async def line_matching(stream: asyncio.StreamReader, pattern: str, seen: list[str], timeout: float = 60) -> re.Match:
    async def read() -> re.Match:
        while True:
            line = (await stream.readline()).decode()
            assert line, f"the example ended before printing {pattern!r}: {seen}"
            seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
    return await asyncio.wait_for(read(), timeout)


async def test_readme_example_runs_against_the_node(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    example = await asyncio.create_subprocess_exec(sys.executable, str(script), env=shop.env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    monitor = None
    seen: list[str] = []
    try:
        pay = await line_matching(example.stdout, r"pay (\d+) sat to (\w+)", seen)
        assert pay.group(1) == "125000"
        monitor = await asyncio.create_subprocess_exec(CLI, "monitor", "--interval", "0.5", env=shop.env,
                                                       stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.DEVNULL)
        txid = await node.send(pay.group(2), 125_000)
        out, err = await asyncio.wait_for(example.communicate(), 60)
        seen += out.decode().splitlines(keepends=True)
        assert example.returncode == 0, err.decode()[-3000:]
    finally:
        for proc in (example, monitor):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = "".join(seen)
    assert "no such order: not_found" in text
    assert re.search(r"^\d+ payment_detected order-42$", text, re.M), text
    assert "status unconfirmed received 125000" in text, text
    assert txid


async def test_typed_results_and_errors_for_orders_and_withdrawals(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    env = {**kaccy_env(shop), "KACCY_SIGNER_MNEMONIC": shop.words}
    async with KaccyBitcoin.from_env(env) as kaccy:
        order = await kaccy.create_order("fund-1", 400_000)
        assert isinstance(order, OrderCreated) and order.bip21.startswith(f"bitcoin:{order.address}?amount=0.004")
        assert order.checkout_url is not None and order.checkout_url.startswith("/pay/")
        assert (await kaccy.show_order("fund-1")).checkout_url == order.checkout_url
        await node.send(order.address, 400_000)
        await node.send((await kaccy.create_order("fund-2", 100_000)).address, 100_000)
        await node.mine(1)
        events = await kaccy.monitor_tick()
        assert [e.kind for e in events if e.subject == "fund-1"][:1] == ["payment_detected"]
        assert (await kaccy.show_order("fund-1")).status == "confirmed"

        with pytest.raises(NotFound) as missing:
            await kaccy.show_order("nope")
        assert isinstance(missing.value, KaccyError) and missing.value.code == "not_found"
        dest = await node.call("getnewaddress", wallet="miner")
        with pytest.raises(InsufficientFunds) as short:
            await kaccy.create_withdrawal([(dest, 5_000_000)], fee_rate=2)
        assert short.value.code == "insufficient_funds" and short.value.missing_sat > 0
        with pytest.raises(InvalidFeeRate):
            await kaccy.create_withdrawal([(dest, 1_000)], fee_rate="fast")

        other = await kaccy.create_withdrawal([(dest, 10_000)], fee_rate=2)
        cancelled = await kaccy.cancel_withdrawal(other.withdrawal_id)
        assert cancelled == WithdrawalStep(other.withdrawal_id, "rejected")

        created = await kaccy.create_withdrawal([(dest, 150_000)], fee_rate="2.5")
        assert isinstance(created, Withdrawal) and created.state == "created" and created.txid is None
        assert sum(i.amount_sat for i in created.inputs) == sum(o.amount_sat for o in created.outputs) + created.fee_sat
        signed = await kaccy.sign_withdrawal(created.withdrawal_id, "software")
        assert isinstance(signed, WithdrawalStep) and signed.state == "signed" and signed.psbt
        sent = await kaccy.broadcast_withdrawal(created.withdrawal_id)
        assert sent.state == "broadcast" and sent.txid in await node.call("getrawmempool")
        shown = await kaccy.show_withdrawal(created.withdrawal_id)
        assert (shown.txid, shown.confirmations, shown.state) == (sent.txid, 0, "broadcast")

        page = await kaccy.list_events(after=0, limit=1000)
        assert page.events and page.next == page.events[-1].seq
        assert await kaccy.ack("api", page.next) == page.next
        feed = kaccy.events(consumer="api")
        await node.mine(1)
        await kaccy.monitor_tick()
        first = await asyncio.wait_for(feed.__anext__(), 10)   # only what came after the ack
        assert first.seq > page.next
        await feed.aclose()


async def test_settings_are_checked_and_the_unexpected_is_wrapped(node, tmp_path) -> None:
    with pytest.raises(ConfigError) as bad:
        KaccyBitcoin.from_settings(poll_interval=0)
    assert bad.value.code == "config_error" and isinstance(bad.value, KaccyError)
    with pytest.raises(ConfigError, match="unknown settings: colour"):
        KaccyBitcoin.from_settings(colour="red")

    shop = Shop(node, tmp_path)
    settings = {k.removeprefix("KACCY_").lower(): v for k, v in kaccy_env(shop).items() if "TEST" not in k}
    async with KaccyBitcoin.from_settings(settings) as kaccy:
        assert kaccy.settings["database_url"] == f"sqlite:///{tmp_path}/shop.db"

        def broken(order_id: str) -> None:
            raise RuntimeError("a bug")

        async def show(order_id: str) -> None:
            broken(order_id)

        kaccy.container.services.show_order.override(providers.Object(show))
        with pytest.raises(InternalError) as wrapped:
            await kaccy.show_order("x")
        assert wrapped.value.code == "internal" and isinstance(wrapped.value.__cause__, RuntimeError)


def test_top_level_import_is_cheap() -> None:
    import subprocess

    probe = "import sys, kaccy_bitcoin; print(sorted(m for m in sys.modules if m.startswith(('kaccy_bitcoin.', 'sqlalchemy', 'aiohttp', 'dependency_injector'))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/",
                         env={k: v for k, v in os.environ.items() if not k.startswith("KACCY_")})
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def fake_lnd(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from tests.fake_lnd import FakeLndProcess

    process = FakeLndProcess(tmp_path_factory.mktemp("fake-lnd-embedding"))
    process.start()
    yield process
    process.stop()


async def test_lightning_pay_and_channels(fake_lnd, tmp_path) -> None:  # noqa: ANN001
    from kaccy_bitcoin import Channel, LightningPayment, LndError

    settings = {"data_dir": str(tmp_path), "lnd_rest_url": fake_lnd.rest_url,
                "lnd_macaroon": fake_lnd.info["macaroon"], "lnd_tls_cert": fake_lnd.info["tls_cert"]}
    async with KaccyBitcoin.from_settings(settings) as kaccy:
        (channel,) = await kaccy.channels()
        assert isinstance(channel, Channel) and channel.active and channel.capacity_sat == 1_000_000
        invoice = await fake_lnd.invoice_elsewhere(10_000_000, "supplier")
        paid = await kaccy.pay_invoice(invoice["payment_request"], max_fee_sat=50)
        assert isinstance(paid, LightningPayment) and (paid.state, paid.amount_msat) == ("succeeded", 10_000_000)
    wrong = tmp_path / "wrong.macaroon"
    wrong.write_bytes(b"\x01" * 32)
    async with KaccyBitcoin.from_settings({**settings, "lnd_macaroon": str(wrong)}) as kaccy:
        with pytest.raises(LndError) as refused:
            await kaccy.channels()
        assert refused.value.code == "lnd_auth_failed" and isinstance(refused.value, KaccyError)


async def test_bump_cpfp_and_void_are_typed(node, tmp_path) -> None:
    from kaccy_bitcoin import FeeTooLow, VoidedWithdrawal

    shop = Shop(node, tmp_path)
    async with KaccyBitcoin.from_env({**kaccy_env(shop), "KACCY_SIGNER_MNEMONIC": shop.words}) as kaccy:
        for n, amount in enumerate((300_000, 200_000, 100_000)):
            await node.send((await kaccy.create_order(f"fund-{n}", amount)).address, amount)
        await node.mine(1)
        await kaccy.monitor_tick()
        dest = await node.call("getnewaddress", wallet="miner")

        first = await kaccy.create_withdrawal([(dest, 20_000)], fee_rate=1)   # change from any coin
        await kaccy.sign_withdrawal(first.withdrawal_id, "software")
        await kaccy.broadcast_withdrawal(first.withdrawal_id)
        with pytest.raises(FeeTooLow) as low:
            await kaccy.bump_withdrawal(first.withdrawal_id, "1.5")
        assert low.value.code == "fee_too_low" and low.value.minimum_sat > 0
        bumped = await kaccy.bump_withdrawal(first.withdrawal_id, 5)
        assert isinstance(bumped, Withdrawal) and bumped.replaces == first.withdrawal_id
        child = await kaccy.cpfp_withdrawal(first.withdrawal_id, 10)
        assert child.child_of == first.withdrawal_id and child.kind == "cpfp"
        await kaccy.cancel_withdrawal(child.withdrawal_id)
        await kaccy.cancel_withdrawal(bumped.withdrawal_id)

        voided = await kaccy.void_withdrawal(first.withdrawal_id)
        assert isinstance(voided, VoidedWithdrawal) and voided.void.kind == "void"
        assert voided.void.replaces == first.withdrawal_id and voided.void.txid in await node.call("getrawmempool")


async def test_run_monitor_leads_and_finds_payments(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    states: list[dict] = []
    async with KaccyBitcoin.from_env(kaccy_env(shop)) as kaccy:
        order = await kaccy.create_order("run-1", 30_000)
        stop = asyncio.Event()
        running = asyncio.create_task(kaccy.run_monitor(stop, interval=60, on_state=states.append))
        await node.send(order.address, 30_000)
        async for stored in kaccy.events():
            if stored.event.kind == "payment_detected" and stored.event.subject == "run-1":
                break
        stop.set()
        await asyncio.wait_for(running, 10)
    assert [s["monitor"] for s in states] == ["started", "leader"] and states[0]["notifications"]


async def test_an_order_paid_over_lightning(node, tmp_path, fake_lnd) -> None:  # noqa: ANN001
    from kaccy_bitcoin import OrderInvoice, OrderInvoiceCreated

    shop = Shop(node, tmp_path, KACCY_LND_REST_URL=fake_lnd.rest_url, KACCY_LND_MACAROON=fake_lnd.info["macaroon"],
                KACCY_LND_TLS_CERT=fake_lnd.info["tls_cert"])
    async with KaccyBitcoin.from_env(kaccy_env(shop)) as kaccy:
        await kaccy.create_order("ln-1", 20_000)
        made = await kaccy.create_order_invoice("ln-1", 20_000_000, expiry_seconds=600)
        assert isinstance(made, OrderInvoiceCreated) and made.state == "open"
        await fake_lnd.pay(made.payment_request)
        assert "invoice_settled" in [e.kind for e in await kaccy.monitor_tick()]
        shown = await kaccy.show_order_invoice("ln-1")
        assert isinstance(shown, OrderInvoice) and (shown.state, shown.amount_msat) == ("settled", 20_000_000)
        assert (await kaccy.show_order("ln-1")).status == "finalized"


async def test_controls_wallets_consolidation_and_stats_are_typed(node, tmp_path) -> None:
    from kaccy_bitcoin.application.results import (AuditEntry, AuditVerification, ConsolidationPlan,
                                                    ConsolidationRun, Limits, Stats, WalletBalance)
    from kaccy_bitcoin.domain.errors import LimitExceeded, UnknownWallet

    shop = Shop(node, tmp_path, KACCY_CONFIRMATIONS="1,1,1", KACCY_LONG_TERM_FEE_RATE="20")
    env = {**kaccy_env(shop), "KACCY_SIGNER_MNEMONIC": shop.words}
    async with KaccyBitcoin.from_env(env) as kaccy:
        for n in range(3):
            await node.send((await kaccy.create_order(f"c-{n}", 50_000)).address, 50_000)
        await node.mine(1)
        await kaccy.monitor_tick()
        limits = await kaccy.set_limits("carol", daily_sat=40_000, by="olivia")
        assert limits == Limits(user="carol", daily_sat=40_000) and await kaccy.show_limits("carol") == limits
        dest = await node.call("getnewaddress", wallet="miner")
        with pytest.raises(LimitExceeded) as refused:
            await kaccy.create_withdrawal([(dest, 50_000)], fee_rate=2, user="carol")
        assert (refused.value.limit, refused.value.remaining_sat) == ("daily", 40_000)
        verified = await kaccy.verify_audit()
        assert isinstance(verified, AuditVerification) and verified.ok and verified.entries > 0
        trail = await kaccy.query_audit(subject="carol")
        assert [(e.kind, e.actor) for e in trail] == [("limits_set", "olivia")] and isinstance(trail[0], AuditEntry)
        (default,) = await kaccy.list_wallets()
        assert isinstance(default, WalletBalance) and default.utxo_count == 3
        plan = await kaccy.plan_consolidation(fee_rate=2)
        assert isinstance(plan, ConsolidationPlan) and len(plan.inputs) == 3 and plan.saving_sat > 0
        ran = await kaccy.run_consolidation(fee_rate=2)
        assert isinstance(ran, ConsolidationRun) and ran.state == "broadcast"
        assert (await kaccy.consolidation_status()).withdrawal_id == ran.withdrawal_id
        with pytest.raises(UnknownWallet):
            await kaccy.plan_consolidation("nope")
        stats = await kaccy.stats()
        assert isinstance(stats, Stats) and stats.volume_in_sat == 150_000 and stats.deposits_confirmed == 3
        assert stats.wallets[0].wallet == "default"
