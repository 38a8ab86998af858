"""The domain of orders paid over Lightning: the invoice machine driven by LND's reports, and
a settled invoice counted in the order's payment (once, as final money)."""
from __future__ import annotations

import datetime as dt

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.invoice_state import InvoiceMachine, InvoiceState
from kaccy_bitcoin.domain.lightning import CancelReason, LightningInvoice
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.money import MilliSatoshis, Satoshis
from kaccy_bitcoin.domain.orders import OutputObservation, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds, PaymentState

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
HASH = "ab" * 32
THRESHOLDS = ConfirmationThresholds()


def report(state: InvoiceState, *, paid: int = 0, settle_index: int = 0,
           reason: CancelReason | None = None) -> LightningInvoice:
    return LightningInvoice(payment_hash=HASH, payment_request="lnbcrt1...", amount=MilliSatoshis(10_000_000),
                            memo="", created_at=T0, expiry_seconds=600, state=state,
                            amount_paid=MilliSatoshis(paid), add_index=7, settle_index=settle_index,
                            settled_at=T0 + dt.timedelta(seconds=5) if state is InvoiceState.SETTLED else None,
                            cancel_reason=reason)


def issued() -> OrderInvoice:
    invoice = OrderInvoice.issued("o-1", report(InvoiceState.OPEN), T0)
    assert [e.kind for e in invoice.take_events()] == ["invoice_created"]
    return invoice


def request(amount: int = 10_000) -> PaymentRequest:
    return PaymentRequest("o-1", "bcrt1qexample", Satoshis(amount), T0)


def test_lnd_reports_drive_the_invoice_machine() -> None:
    invoice = issued()
    assert invoice.observe(report(InvoiceState.PENDING), T0)
    assert invoice.observe(report(InvoiceState.SETTLED, paid=10_000_000, settle_index=3), T0)
    assert [t.trigger for t in invoice.machine.history] == ["accept_htlc", "settle"]
    assert InvoiceMachine.replay(invoice.machine.history).state is InvoiceState.SETTLED
    (settled,) = invoice.take_events()
    assert (settled.id, settled.kind, settled.data["amount_paid_msat"]) == (f"invoice_settled:{HASH}",
                                                                           "invoice_settled", 10_000_000)
    # Seen again (a replayed stream, a lookup after a reconnect): nothing moves, nothing is emitted.
    assert not invoice.observe(report(InvoiceState.SETTLED, paid=10_000_000, settle_index=3), T0)
    assert not invoice.observe(report(InvoiceState.EXPIRED, reason=CancelReason.CANCELED), T0)
    assert invoice.take_events() == [] and invoice.status == "settled"


@pytest.mark.parametrize("reason, trigger", [(CancelReason.EXPIRED, "expire"), (CancelReason.CANCELED, "cancel")])
def test_canceled_at_lnd_is_expired_or_canceled(reason: CancelReason, trigger: str) -> None:
    invoice = issued()
    assert invoice.observe(report(InvoiceState.EXPIRED, reason=reason), T0)
    assert [t.trigger for t in invoice.machine.history] == [trigger]
    assert invoice.status == reason.value and invoice.to_dict()["settled_at"] is None
    assert [e.data["reason"] for e in invoice.take_events()] == [reason.value]


def test_a_settled_invoice_finalizes_the_order_once() -> None:
    payment = Payment("o-1")
    assert payment.settle_lightning(request(), HASH, 10_000_000, T0)
    assert not payment.settle_lightning(request(), HASH, 10_000_000, T0)
    payment.settle(request(), THRESHOLDS, T0)
    assert payment.state is PaymentState.FINALIZED
    assert [t.trigger for t in payment.history] == ["settle_offchain"]
    assert [e.kind for e in payment.take_events()] == ["payment_finalized", "order_paid"]
    assert payment.received == Satoshis(10_000) and payment.confirmations(request()) == 0
    payment.settle(request(), THRESHOLDS, T0)
    assert payment.take_events() == []


def test_lightning_and_onchain_together() -> None:
    """Half over Lightning, half on chain: the on-chain half's depth decides, Lightning counts
    as deeper than any block; a sub-satoshi remainder is not counted."""
    payment = Payment("o-1")
    payment.settle_lightning(request(), HASH, 5_000_999, T0)
    payment.observe(request(), OutputObservation(OutPoint(Txid("cd" * 32), 0), Satoshis(5_000), 0), T0)
    payment.settle(request(), THRESHOLDS, T0)
    assert payment.received == Satoshis(10_000) and payment.state is PaymentState.UNCONFIRMED
    payment.observe(request(), OutputObservation(OutPoint(Txid("cd" * 32), 0), Satoshis(5_000), 6), T0)
    payment.settle(request(), THRESHOLDS, T0)
    assert payment.state is PaymentState.FINALIZED
    assert [e.kind for e in payment.take_events()].count("order_paid") == 1


def test_lightning_after_the_order_failed_is_reported_not_lost() -> None:
    expiring = attrs.evolve(request(), expires_at=T0 + dt.timedelta(seconds=1))
    payment = Payment("o-1")
    payment.expire(expiring, T0 + dt.timedelta(seconds=2))
    assert payment.state is PaymentState.FAILED
    payment.take_events()
    payment.settle_lightning(expiring, HASH, 10_000_000, T0 + dt.timedelta(seconds=3))
    payment.settle(expiring, THRESHOLDS, T0 + dt.timedelta(seconds=3))
    events = payment.take_events()
    assert events[0].kind == "payment_late" and events[0].data["reason"] == "order_failed"
    assert payment.received == Satoshis(10_000)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 20_000_000)), max_size=12))
def test_each_invoice_counts_once_whatever_the_replays(settlements: list[tuple[str, int]]) -> None:
    payment = Payment("o-1")
    first: dict[str, int] = {}
    for key, msat in settlements:
        payment.settle_lightning(request(), key * 64, msat, T0)
        payment.settle(request(), THRESHOLDS, T0)
        first.setdefault(key, msat)
    assert payment.received.value == sum(first.values()) // 1000
    assert [e.kind for e in payment.take_events()].count("order_paid") == (
        1 if sum(first.values()) // 1000 >= 10_000 else 0)
