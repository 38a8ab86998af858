"""Each monitor phase and each withdrawal fails alone, and is alerted once per item and cause
(issue 17, point 1), on the storage adapters (memory, SQLite, PostgreSQL when configured)."""
from __future__ import annotations

import datetime as dt

import attrs
import pytest
from bitcointx.core import COutPoint, CMutableTransaction, CTxIn, CTxOut
from bitcointx.core.script import OP_TRUE, CScript

from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.adapters.memory.fake_chain import FakeChain
from kaccy_bitcoin.adapters.memory.publisher import InProcessPublisher, RecordingNotifier
from kaccy_bitcoin.application.lightning_invoices import InvoiceSync
from kaccy_bitcoin.application.monitor import RunMonitor
from kaccy_bitcoin.application.monitor_tick import MonitorTick
from kaccy_bitcoin.application.swap_monitor import FollowSwaps
from kaccy_bitcoin.application.swaps import SwapContext, SwapSettings
from kaccy_bitcoin.application.withdrawal_tracker import TrackerSettings, TrackWithdrawals
from kaccy_bitcoin.domain.bitcoin import Network, OutPoint, Txid, transaction_id
from kaccy_bitcoin.domain.errors import KaccyError, MonitorPollFailed, WithdrawalStateError
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.lightning import LightningInvoice
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.money import MilliSatoshis, Satoshis
from kaccy_bitcoin.domain.orders import PaymentRequest
from kaccy_bitcoin.domain.swaps import INITIATOR, Swap
from kaccy_bitcoin.domain.withdrawals import Withdrawal, WithdrawalInput, WithdrawalOutput
from kaccy_bitcoin.ports.lightning import LightningNode, LightningNodeError
from kaccy_bitcoin.ports.swap_chain import ChainOutput, SwapChain

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def raw_tx(n: int) -> bytes:
    tx = CMutableTransaction([CTxIn(COutPoint(bytes([n]) * 32, 0))], [CTxOut(9_000, CScript([OP_TRUE]))])
    return tx.serialize()


def broadcast_withdrawal(wid: str, raw: bytes, keep: bool) -> Withdrawal:
    """A withdrawal adopted as broadcast; its PSBT here was never signed."""
    txid = transaction_id(raw)
    w = Withdrawal(wid, T0, [WithdrawalInput(OutPoint(Txid("aa" * 32), int(wid[-1])), Satoshis(10_000))],
                   [WithdrawalOutput("addr", Satoshis(9_000))], Satoshis(1_000), "not a signed psbt", txid=txid)
    w.chain_moves("seen", T0, "in the mempool")
    if keep:
        w.keep_signed(raw)
    return w


class LosingChain(FakeChain):
    """The node's wallet saw our withdrawals' transactions, which are no longer in the mempool;
    it knows the raw transactions in `known` only, and records what was resubmitted."""

    def __init__(self, known: dict[Txid, bytes]) -> None:
        super().__init__()
        self.known = known
        self.sent: list[bytes] = []

    async def raw_transaction(self, txid: Txid) -> bytes:
        if txid not in self.known:
            raise WithdrawalStateError(f"no such transaction {txid.value}")   # a KaccyError, as the node's
        return self.known[txid]

    async def test_accept(self, raw_tx: bytes):  # noqa: ANN201
        from kaccy_bitcoin.domain.chain import MempoolAcceptance

        return MempoolAcceptance(transaction_id(raw_tx), True)

    async def broadcast(self, raw_tx: bytes) -> Txid:
        self.sent.append(raw_tx)
        return transaction_id(raw_tx)


def with_notifier() -> tuple[InProcessPublisher, RecordingNotifier]:
    publisher, notifier = InProcessPublisher(), RecordingNotifier()

    async def discrepancies(event: DomainEvent) -> None:   # as the container wires the notifier
        if event.is_discrepancy:
            await notifier.notify(event)

    publisher.subscribe(discrepancies)
    return publisher, notifier


def test_keep_signed_refuses_another_transaction() -> None:
    w = broadcast_withdrawal("w-1", raw_tx(1), keep=False)
    with pytest.raises(WithdrawalStateError):
        w.keep_signed(raw_tx(2))
    assert w.signed_tx is None


async def test_one_withdrawal_that_cannot_be_resubmitted_stops_none_of_the_others(uow_factory) -> None:  # noqa: ANN001
    kept, asked, lost = raw_tx(1), raw_tx(2), raw_tx(3)
    with uow_factory() as uow:
        uow.withdrawals.save(broadcast_withdrawal("w-1", kept, keep=True))      # kept when first seen
        uow.withdrawals.save(broadcast_withdrawal("w-2", asked, keep=False))    # the node still has it
        uow.withdrawals.save(broadcast_withdrawal("w-3", lost, keep=False))     # nobody has it
        uow.commit()
    chain = LosingChain({transaction_id(asked): asked})
    publisher, notifier = with_notifier()
    clock = ManualClock(T0 + dt.timedelta(hours=1))
    track = TrackWithdrawals(uow_factory, chain, clock, publisher,
                             TrackerSettings(Network.REGTEST, first_delay_seconds=0))
    # The wallet no longer shows any of them in the mempool: each is due for resubmission.
    first = await track()
    assert sorted(chain.sent) == sorted([kept, asked])
    assert [(f.phase, f.item) for f in first.failed] == [("withdrawals", "w-3")]
    assert [(e.kind, e.subject, e.data["item"]) for e in first] == [("monitor_item_failed", "w-3", "w-3")]
    assert [e.kind for e in notifier.notified] == ["monitor_item_failed"]
    with uow_factory.read() as uow:
        stored = {wid: uow.withdrawals.get(wid) for wid in ("w-1", "w-2", "w-3")}
    assert stored["w-2"].signed_tx == asked.hex() and stored["w-3"].signed_tx is None
    assert [stored[w].rebroadcasts for w in ("w-1", "w-2", "w-3")] == [1, 1, 0]

    clock.advance(3600)
    second = await track()
    assert [(f.phase, f.item) for f in second.failed] == [("withdrawals", "w-3")]
    assert list(second) == [] and len(notifier.notified) == 1        # skipped again, alerted once
    with uow_factory.read() as uow:
        assert [e.kind for e in uow.audit.events()].count("monitor_item_failed") == 1


async def test_a_node_that_stops_answering_fails_the_phase_not_each_withdrawal(uow_factory) -> None:  # noqa: ANN001
    class Unreachable(KaccyError):
        code = "node_unreachable"

    class DownChain(LosingChain):
        async def raw_transaction(self, txid: Txid) -> bytes:
            raise Unreachable("the node does not answer")

    with uow_factory() as uow:
        uow.withdrawals.save(broadcast_withdrawal("w-1", raw_tx(1), keep=False))
        uow.withdrawals.save(broadcast_withdrawal("w-2", raw_tx(2), keep=False))
        uow.commit()
    publisher, notifier = with_notifier()
    track = TrackWithdrawals(uow_factory, DownChain({}), ManualClock(T0 + dt.timedelta(hours=1)), publisher,
                             TrackerSettings(Network.REGTEST, first_delay_seconds=0))
    with pytest.raises(Unreachable):
        await track()
    assert notifier.notified == []
    with uow_factory.read() as uow:
        assert [uow.withdrawals.get(w).rebroadcasts for w in ("w-1", "w-2")] == [0, 0]   # nothing half-written


async def test_a_phase_that_raises_stops_no_other_and_is_alerted_once(uow_factory) -> None:  # noqa: ANN001
    publisher, notifier = with_notifier()
    clock = ManualClock(T0)
    ran: list[str] = []

    def phase(name: str, fails: bool = False):  # noqa: ANN202
        async def run() -> list[DomainEvent]:
            ran.append(name)
            if fails:
                raise RuntimeError(f"{name} broke")
            async with uow_factory() as uow:
                uow.record([DomainEvent(f"{name}:{len(ran)}", "unexpected_spend", name, clock.now())])
                uow.commit()
            return uow.committed_events()
        return run

    tick = MonitorTick(phase("payments"), phase("withdrawals", fails=True), uow_factory, clock, publisher,
                       more=[phase("proposal")])
    with pytest.raises(MonitorPollFailed) as failed:
        await tick()
    assert ran == ["payments", "withdrawals", "proposal"]
    assert failed.value.code == "internal" and "withdrawals" in str(failed.value)
    assert [(e.kind, e.subject) for e in failed.value.events] == [
        ("unexpected_spend", "payments"), ("unexpected_spend", "proposal"), ("monitor_item_failed", "withdrawals")]
    assert failed.value.details()["failed"] == [
        {"phase": "withdrawals", "item": None, "code": "internal", "message": "withdrawals broke"}]
    with pytest.raises(MonitorPollFailed) as again:
        await tick()
    assert "monitor_item_failed" not in [e.kind for e in again.value.events]
    assert [e.kind for e in notifier.notified].count("monitor_item_failed") == 1


async def test_the_running_monitor_keeps_the_events_of_a_round_that_failed_in_part() -> None:
    import asyncio

    stop = asyncio.Event()
    seen: list[list] = []
    event = DomainEvent("x", "unexpected_spend", "x", T0)

    async def round_() -> list[DomainEvent]:
        stop.set()
        raise MonitorPollFailed("the monitor's lightning phase failed: down", "lnd_unreachable", [event], [])

    await RunMonitor(round_, interval=60)(on_events=seen.append, stop=stop)
    assert seen == [[event]]


class OneBadInvoiceLnd(LightningNode):
    """LND answering about every invoice but one (an error that is not LND being down)."""

    def __init__(self, invoices: dict[str, LightningInvoice], bad: str) -> None:
        self.invoices, self.bad = invoices, bad

    async def lookup_invoice(self, payment_hash: str) -> LightningInvoice:
        if payment_hash == self.bad:
            raise LightningNodeError("lookup: LND error 2 (HTTP 500): something about this one")
        return self.invoices[payment_hash]

    async def create_invoice(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def list_invoices(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def cancel_invoice(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    def subscribe_invoices(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    def pay_updates(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def decode_payment_request(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def channels(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def channel_balance(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def open_channel(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def close_channel(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def pending_channels(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def connect_peer(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def node_info(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704
    async def track_payment(self, *a, **k): raise NotImplementedError  # noqa: ANN002, ANN003, ANN201, E704


async def test_an_invoice_lnd_cannot_answer_about_is_skipped_and_the_others_settle(uow_factory) -> None:  # noqa: ANN001
    from kaccy_bitcoin.application.settings import PaymentSettings
    from kaccy_bitcoin.domain.lightning import InvoiceState

    clock = ManualClock(T0)
    invoices = {}
    with uow_factory() as uow:
        for n in (1, 2):
            order = f"ln-{n}"
            uow.requests.add(PaymentRequest(order, f"bcrt1-{n}", Satoshis(1_000), T0))
            lnd = LightningInvoice(f"{n}" * 64, f"lnbcrt{n}", MilliSatoshis(1_000_000), order, T0, 3600)
            invoices[lnd.payment_hash] = attrs.evolve(lnd, state=InvoiceState.SETTLED,
                                                      amount_paid=MilliSatoshis(1_000_000), settle_index=n,
                                                      settled_at=T0)
            uow.invoices.add(OrderInvoice.issued(order, lnd, T0))
        uow.commit()
    publisher, notifier = with_notifier()
    sync = InvoiceSync(uow_factory, OneBadInvoiceLnd(invoices, bad="2" * 64), clock, publisher, PaymentSettings())
    tick = MonitorTick(lambda: _nothing(), lambda: _nothing(), uow_factory, clock, publisher, lightning=lambda: sync)
    events = await tick()
    assert [(f.phase, f.item) for f in events.failed] == [("lightning", "2" * 64)]
    assert ("order_paid", "ln-1") in [(e.kind, e.subject) for e in events]
    assert [(e.kind, e.subject) for e in notifier.notified] == [("monitor_item_failed", "2" * 64)]
    assert (await tick()).failed and len(notifier.notified) == 1


async def _nothing() -> list[DomainEvent]:
    return []


class SwapChainLosingOne(SwapChain):
    """Our two swap locks are funded, unconfirmed and unspent; asking about one of them fails
    (`broken`), or every question fails with the node's `node_unreachable` (`down`)."""

    def __init__(self, broken: Txid | None = None, down: bool = False) -> None:
        self.broken, self.down = broken, down

    def _ask(self, txid: Txid | None = None) -> None:
        class Unreachable(KaccyError):
            code = "node_unreachable"

        if self.down:
            raise Unreachable("the node does not answer")
        if txid is not None and txid == self.broken:
            raise WithdrawalStateError(f"the node cannot tell about {txid.value}")

    async def tip_height(self) -> int:
        self._ask()
        return 100

    async def unspent_output(self, outpoint: OutPoint) -> ChainOutput | None:
        self._ask(outpoint.txid)
        return ChainOutput(Satoshis(50_000), b"", 0)

    async def output_count(self, txid: Txid) -> int | None:
        return 1

    async def refusal(self, raw_tx: bytes) -> str | None:
        self._ask()
        return None

    async def confirmations(self, txid: Txid) -> int | None:
        self._ask(txid)
        return 0

    async def spender(self, outpoint: OutPoint, from_height: int) -> bytes | None:
        return None

    async def broadcast(self, raw_tx: bytes) -> Txid:
        raise AssertionError("nothing is sent")


def funded_swap(swap_id: str, index: int, txid: Txid) -> Swap:
    s = Swap(swap_id, INITIATOR, index, bytes.fromhex("02" + "11" * 32), bytes.fromhex("03" + "22" * 32),
             Satoshis(50_000), Satoshis(40_000), "default", T0)
    s.set_terms(bytes(32), 300)
    s.funding_requested(f"w-{swap_id}")
    s.funded(OutPoint(txid, 0), T0)
    return s


async def test_one_swap_the_monitor_cannot_follow_is_skipped_reported_and_alerted_once(uow_factory) -> None:  # noqa: ANN001
    broken = Txid("cd" * 32)
    with uow_factory() as uow:
        uow.swaps.save(funded_swap("s-ok", 0, Txid("ab" * 32)))
        uow.swaps.save(funded_swap("s-bad", 1, broken))
        uow.commit()
    publisher, notifier = with_notifier()
    clock = ManualClock(T0)

    async def nothing() -> list[DomainEvent]:
        return []

    def tick(chain: SwapChain) -> MonitorTick:
        ctx = SwapContext(uow_factory, chain, clock, publisher, SwapSettings(Network.REGTEST), keys=lambda: None,
                          builder=lambda: None)
        return MonitorTick(nothing, nothing, uow_factory, clock, publisher, more=[FollowSwaps(ctx)])

    outcome = await tick(SwapChainLosingOne(broken))()              # only an item failed: no MonitorPollFailed
    assert [(f.phase, f.item, f.code) for f in outcome.failed] == [("swaps", "s-bad", "invalid_withdrawal_state")]
    assert [(e.kind, e.subject) for e in outcome] == [("monitor_item_failed", "s-bad")]
    again = await tick(SwapChainLosingOne(broken))()
    assert [f.item for f in again.failed] == ["s-bad"] and list(again) == []            # alerted once
    assert [e.kind for e in notifier.notified] == ["monitor_item_failed"]
    with pytest.raises(MonitorPollFailed) as down:                    # the node down: the phase fails
        await tick(SwapChainLosingOne(down=True))()
    assert [(f.phase, f.item) for f in down.value.failed] == [("swaps", None)]
