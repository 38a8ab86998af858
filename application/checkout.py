"""Use cases of the hosted checkout page (`GET /pay/{token}`): what the customer is shown of
one order, and the same again each time one of that order's events is committed.

The token is the capability: whoever holds it sees this one order's amount, address, payment
URI and progress, and nothing else (no txids, no other order; the order's label only inside
its BIP21 URI, where the order's `bip21` already gives it to the payer's wallet). The words
for the payment's progress: waiting (nothing seen) → seen (in the mempool) → confirmed → paid
(final, or settled over Lightning); underpaid (the rest due, with a payment URI for the rest),
overpaid, expired and failed say so."""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from kaccy_bitcoin.application.orders import bip21
from kaccy_bitcoin.application.payjoin_offers import PayjoinSettings
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.domain.errors import NotFound
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import MatchStatus, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import PaymentState
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

TOKEN_PATTERN = "[A-Za-z0-9_-]{16,64}"
_PROGRESS = {PaymentState.PENDING: "waiting", PaymentState.UNCONFIRMED: "seen",
             PaymentState.CONFIRMED: "confirmed", PaymentState.FULL_CONFIRMED: "confirmed",
             PaymentState.FINALIZED: "paid", PaymentState.FAILED: "failed"}


def payment_uri(request: PaymentRequest, invoice: OrderInvoice | None, pj: str | None = None) -> str:
    """The order's BIP21 URI (with its BIP78 `pj=` while the order offers a payjoin), unified
    with `lightning=<BOLT11>` while an invoice is open (wallets that speak Lightning pay that,
    the others the address)."""
    uri = bip21(request.address, request.amount, request.label)   # the order's own `bip21`, QR and link alike
    if pj:
        uri += f"&pj={pj}"
    return f"{uri}&lightning={invoice.payment_request}" if invoice is not None else uri


def checkout_view(request: PaymentRequest, payment: Payment | None, invoices: list[OrderInvoice],
                  now: Any, final_confirmations: int, pj: str | None = None) -> dict[str, Any]:
    payment = payment or Payment(request.order_id)
    state = payment.state
    match = payment.match(request)
    received = payment.received.value
    expired = request.is_expired(now)
    progress = _PROGRESS[state]
    open_invoice = next((i for i in invoices if i.is_open and i.status == "open" and i.expires_at > now), None) \
        if state is PaymentState.PENDING and not expired else None
    if state is PaymentState.FAILED:
        status = "expired" if expired or received == 0 else "failed"
    elif match is MatchStatus.UNDERPAID:
        status = "underpaid"
    elif match is MatchStatus.OVERPAID:
        status = "overpaid"
    elif state is PaymentState.PENDING and expired:
        status = "expired"
    else:
        status = progress
    due = max(0, request.amount.value - received) if match is MatchStatus.UNDERPAID else 0
    return {
        "order_id": request.order_id,
        "status": status,
        "progress": progress,
        "amount_sat": request.amount.value,
        "amount_btc": request.amount.to_btc(),
        "address": request.address,
        # A payjoin is offered only while nothing has been received (BIP78: one original per order).
        "payment_uri": payment_uri(request, open_invoice, pj if state is PaymentState.PENDING and not expired else None),
        "lightning": open_invoice.payment_request if open_invoice else None,
        "received_sat": received,
        "due_sat": due,
        "due_btc": Satoshis(due).to_btc() if due else None,
        "due_uri": bip21(request.address, Satoshis(due), request.label) if due else None,
        "confirmations": payment.confirmations(request) or 0,
        "confirmations_needed": final_confirmations,
        "expires_at": request.expires_at.isoformat() if request.expires_at else None,
        "expires_in": max(0, int((request.expires_at - now).total_seconds())) if request.expires_at else None,
    }


class ShowCheckout:
    """The checkout page's view of the order the token opens (`NotFound` for any other token)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, settings: PaymentSettings | None = None,
                 payjoin: PayjoinSettings | None = None) -> None:
        self._uow = uow
        self._clock = clock
        self._final = (settings or PaymentSettings()).thresholds.final
        self._payjoin = payjoin   # the order's `pj=` in the page's URI, as in its `bip21`

    async def __call__(self, token: str) -> dict[str, Any]:
        return (await self.snapshot(token))[0]

    async def snapshot(self, token: str) -> tuple[dict[str, Any], int]:
        """The view and the newest event's seq as of that view (read together)."""
        return await asyncio.get_running_loop().run_in_executor(None, self._read, token)

    def _read(self, token: str) -> tuple[dict[str, Any], int]:
        if not isinstance(token, str) or not token:
            raise NotFound("no checkout page here")
        with self._uow.read() as uow:
            request = uow.requests.by_checkout_token(token)
            if request is None:
                raise NotFound("no checkout page here")
            seq = uow.audit.last_seq()
            payment = uow.payments.get(request.order_id)
            invoices = uow.invoices.for_order(request.order_id)
            session = uow.payjoins.for_orders([request.order_id]).get(request.order_id) \
                if self._payjoin is not None and self._payjoin.enabled else None
        pj = self._payjoin.endpoint(session.token) if session is not None else None
        return checkout_view(request, payment, invoices, self._clock.now(), self._final, pj), seq


class CheckoutUpdates:
    """The checkout view again after each committed event of this order (and only of this
    order): the page's live feed. The first answer is the view as of now."""

    def __init__(self, show: ShowCheckout, feed: Any) -> None:
        self._show = show
        self._feed = feed   # application.events.EventFeed

    async def __call__(self, token: str) -> AsyncIterator[dict[str, Any]]:
        view, seq = await self._show.snapshot(token)
        order_id = view["order_id"]
        yield view
        async for stored in self._feed.events(seq):
            event = stored.event
            if event.subject != order_id and event.data.get("order_id") != order_id:
                continue
            fresh = await self._show(token)
            if fresh != view:
                view = fresh
                yield view
