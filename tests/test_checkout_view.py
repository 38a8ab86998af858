"""What the checkout page tells the customer, from the order's state (application/checkout.py):
the steps waiting → seen → confirmed → paid, and underpaid (the rest due, its own URI), overpaid,
expired, failed; the payment URI unified with the open invoice's BOLT11 only while it can be paid."""
from __future__ import annotations

import datetime as dt

import pytest

from kaccy_bitcoin.application.checkout import checkout_view
from kaccy_bitcoin.application.orders import checkout_url, new_checkout_token
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.invoice_state import InvoiceState
from kaccy_bitcoin.domain.lightning import LightningInvoice
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.money import MilliSatoshis, Satoshis
from kaccy_bitcoin.domain.orders import OutputObservation, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
THRESHOLDS = ConfirmationThresholds(1, 3, 6)
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def order(expires_in: int | None = 900, label: str = "") -> PaymentRequest:
    return PaymentRequest("co-9", ADDRESS, Satoshis(100_000), T0,
                          expires_at=T0 + dt.timedelta(seconds=expires_in) if expires_in else None,
                          label=label, checkout_token=new_checkout_token())


def paid(request: PaymentRequest, *outputs: tuple[int, int]) -> Payment:
    payment = Payment(request.order_id)
    for n, (sat, depth) in enumerate(outputs):
        payment.observe(request, OutputObservation(OutPoint(Txid(f"{n + 1:02x}" * 32), 0), Satoshis(sat), depth), T0)
    payment.settle(request, THRESHOLDS, T0)
    return payment


def invoice() -> OrderInvoice:
    made = LightningInvoice(payment_hash="ab" * 32, payment_request="lnbcrt1m1pexample", amount=MilliSatoshis(10**8),
                            memo="", created_at=T0, expiry_seconds=3600, state=InvoiceState.OPEN,
                            amount_paid=MilliSatoshis(0), add_index=1, settle_index=0, settled_at=None,
                            cancel_reason=None)
    return OrderInvoice.issued("co-9", made, T0)


def view(request: PaymentRequest, payment: Payment | None, invoices=(), at: dt.datetime = T0):  # noqa: ANN001, ANN201
    return checkout_view(request, payment, list(invoices), at, THRESHOLDS.final)


@pytest.mark.parametrize("outputs, status, progress", [
    ((), "waiting", "waiting"),
    (((100_000, 0),), "seen", "seen"),
    (((100_000, 2),), "confirmed", "confirmed"),
    (((100_000, 6),), "paid", "paid"),
    (((60_000, 1),), "underpaid", "confirmed"),
    (((150_000, 6),), "overpaid", "paid"),
])
def test_the_customers_words_for_the_payment(outputs, status, progress) -> None:  # noqa: ANN001
    request = order(label="internal note")
    shown = view(request, paid(request, *outputs))
    assert (shown["status"], shown["progress"]) == (status, progress)
    # The order's own bip21 (its label included, as `order create` hands it to the payer's wallet).
    assert shown["payment_uri"] == f"bitcoin:{ADDRESS}?amount=0.001&label=internal%20note"
    assert "label" not in shown and request.checkout_token not in str(shown)


def test_underpaid_shows_the_rest_due_with_its_own_uri() -> None:
    request = order()
    shown = view(request, paid(request, (60_000, 1)))
    assert (shown["received_sat"], shown["due_sat"], shown["due_btc"]) == (60_000, 40_000, "0.00040000")
    assert shown["due_uri"] == f"bitcoin:{ADDRESS}?amount=0.0004"


def test_an_open_invoice_unifies_the_uri_until_the_order_is_paid_or_expired() -> None:
    request = order()
    shown = view(request, None, [invoice()])
    assert shown["payment_uri"] == f"bitcoin:{ADDRESS}?amount=0.001&lightning=lnbcrt1m1pexample"
    assert shown["lightning"] == "lnbcrt1m1pexample"
    assert view(request, paid(request, (100_000, 0)), [invoice()])["lightning"] is None   # seen: pay nothing more
    late = view(request, None, [invoice()], at=T0 + dt.timedelta(seconds=901))
    assert (late["status"], late["lightning"], late["expires_in"]) == ("expired", None, 0)


def test_expired_and_failed() -> None:
    request = order()
    payment = Payment(request.order_id)
    payment.expire(request, T0 + dt.timedelta(seconds=901))
    assert view(request, payment, at=T0 + dt.timedelta(seconds=901))["status"] == "expired"
    assert view(order(None), None)["expires_in"] is None and view(order(None), None)["status"] == "waiting"
    assert view(request, None, at=T0 + dt.timedelta(seconds=300))["expires_in"] == 600


def test_checkout_urls_and_tokens() -> None:
    token = new_checkout_token()
    assert len(token) == 32 and token != new_checkout_token()
    assert checkout_url("https://pay.example.com", token) == f"https://pay.example.com/pay/{token}"
    assert checkout_url("", token) == f"/pay/{token}" and checkout_url("", None) is None


def test_the_public_url_setting() -> None:
    from kaccy_bitcoin.bootstrap.config import ConfigError, load

    assert load({"KACCY_PUBLIC_URL": "https://pay.example.com/shop/"})["public_url"] == "https://pay.example.com/shop"
    assert load({})["public_url"] == ""
    for bad in ("ftp://pay.example.com", "pay.example.com", "https://x.example/?a=1", "https://"):
        with pytest.raises(ConfigError, match="KACCY_PUBLIC_URL"):
            load({"KACCY_PUBLIC_URL": bad})


def test_the_page_offers_the_orders_payjoin_only_while_nothing_was_received() -> None:
    request = order()
    pj = "https://pay.example.com/pj/tok123"
    fresh = checkout_view(request, None, [invoice()], T0, THRESHOLDS.final, pj)
    assert fresh["payment_uri"] == (f"bitcoin:{ADDRESS}?amount=0.001&pj={pj}&lightning=lnbcrt1m1pexample")
    seen = checkout_view(request, paid(request, (40_000, 0)), [], T0, THRESHOLDS.final, pj)
    assert "pj=" not in seen["payment_uri"] and "pj=" not in (seen["due_uri"] or "")


def test_an_invoice_past_its_own_expiry_is_not_offered_while_the_order_still_is() -> None:
    """The invoice (3600 s) ends before the order (7200 s): until LND's cancel is synced, the page
    must not ask a wallet to pay a BOLT11 that can no longer be paid."""
    request = order(expires_in=7200)
    late = view(request, None, [invoice()], at=T0 + dt.timedelta(seconds=3601))
    assert (late["status"], late["lightning"]) == ("waiting", None)
    assert late["payment_uri"] == f"bitcoin:{ADDRESS}?amount=0.001"
