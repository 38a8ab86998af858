"""Orders paid over Lightning: an invoice per order, and what LND says became of it.

`CreateOrderInvoice` asks LND for a BOLT11 invoice and stores it beside the order;
`InvoiceSync` applies LND's reports (looked up or streamed) to the stored invoices and to
their orders' payments, in one unit of work per batch, events included: a settlement counts
for the order (and finalizes it when it covers it), an expiry or a cancellation is recorded.
`WatchInvoices` keeps LND's invoice stream open and resumes it from the persisted add and
settle indexes, looking up every invoice still open after each (re)connect, since the stream
does not carry cancellations and a settlement can fall between two connections.

No unit of work is open while LND is waited on. Everything is idempotent: a report already
applied changes nothing, events have ids derived from the payment hash (and the payment's own
counter), and a write that raced another writer is refused by its version and done again.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable

from kaccy_bitcoin.domain.addresses import MonitorCursor
from kaccy_bitcoin.domain.errors import ConcurrentUpdate, InvalidAmount, InvoiceConflict, NotFound, OrderClosed
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.lightning import LightningInvoice
from kaccy_bitcoin.domain.lightning_orders import DEFAULT_EXPIRY_SECONDS, OrderInvoice, check_expiry
from kaccy_bitcoin.domain.money import MilliSatoshis
from kaccy_bitcoin.domain.orders import Payment
from kaccy_bitcoin.domain.payment_state import PaymentState
from kaccy_bitcoin.application.monitor_tick import ItemFailure, MonitorEvents, skipped
from kaccy_bitcoin.application.providers import resolved
from kaccy_bitcoin.application.retry import retried
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.lightning import LightningNode, LightningNodeError
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

log = logging.getLogger(__name__)
ADD_INDEX = "lightning:add_index"        # cursors: the highest indexes of LND's stream applied
SETTLE_INDEX = "lightning:settle_index"
LOOKUP_CONCURRENCY = 8


class CreateOrderInvoice:
    """An open invoice for the order; asking again with the same amount returns the same one."""

    def __init__(self, uow: UnitOfWorkFactory, node: LightningNode, clock: Clock) -> None:
        self._uow = uow
        self._node = node
        self._clock = clock

    async def __call__(self, order_id: str, amount_msat: int, expiry_seconds: int | None = None) -> dict[str, Any]:
        if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or amount_msat <= 0:
            raise InvalidAmount(f"--amount-msat must be positive, got {amount_msat}")
        amount = MilliSatoshis(amount_msat)
        expiry = check_expiry(DEFAULT_EXPIRY_SECONDS if expiry_seconds is None else expiry_seconds)
        with self._uow.read() as uow:
            existing = self._usable(uow, order_id, amount)
        if existing is not None:
            return _created(existing)
        request_memo = f"order {order_id}"
        made = await self._node.create_invoice(amount, request_memo, expiry)
        invoice = OrderInvoice.issued(order_id, made, self._clock.now())
        try:
            async with self._uow() as uow:
                # Another process may have issued one meanwhile: its invoice wins, ours is withdrawn.
                existing = self._usable(uow, order_id, amount)
                if existing is None:
                    uow.invoices.add(invoice)
                    uow.record(invoice.take_events())
                    uow.commit()
        except BaseException:
            await self._withdraw(invoice.payment_hash)
            raise
        if existing is not None:
            await self._withdraw(invoice.payment_hash)
            return _created(existing)
        return _created(invoice)

    def _usable(self, uow: Any, order_id: str, amount: MilliSatoshis) -> OrderInvoice | None:
        """The order's open invoice for this amount, if any; refuses an order that cannot be paid
        any more or that has an open invoice for another amount."""
        request = uow.requests.get(order_id)
        if request is None:
            raise NotFound(f"no order with id {order_id!r}")
        payment = uow.payments.get(order_id) or Payment(order_id)
        now = self._clock.now()
        if payment.state in (PaymentState.FINALIZED, PaymentState.FAILED):
            raise OrderClosed(f"order {order_id} is {payment.state.name.lower()}: it takes no new payment request")
        if request.is_expired(now) and not payment.counted():
            raise OrderClosed(f"order {order_id} expired at {request.expires_at.isoformat()}")  # type: ignore[union-attr]
        for invoice in uow.invoices.for_order(order_id):
            if invoice.is_open and invoice.expires_at > now:
                if invoice.amount != amount:
                    raise InvoiceConflict(
                        f"order {order_id} has an open invoice for {invoice.amount.value} msat "
                        f"(payment hash {invoice.payment_hash}, expires {invoice.expires_at.isoformat()}), "
                        f"not {amount.value} msat")
                return invoice
        return None

    async def _withdraw(self, payment_hash: str) -> None:
        try:
            await self._node.cancel_invoice(payment_hash)
        except Exception:  # noqa: BLE001 - best effort: an invoice nobody was given expires unpaid
            log.warning("could not cancel the unused invoice %s; it will expire unpaid", payment_hash)


def _created(invoice: OrderInvoice) -> dict[str, Any]:
    return {"order_id": invoice.order_id, "payment_request": invoice.payment_request,
            "payment_hash": invoice.payment_hash, "state": invoice.status}


class InvoiceSync:
    """Apply what LND reports about invoices to ours and to their orders' payments."""

    def __init__(self, uow: UnitOfWorkFactory, node: LightningNode, clock: Clock, publisher: EventPublisher,
                 settings: PaymentSettings) -> None:
        self._uow = uow
        self._node = node
        self._clock = clock
        self._publisher = publisher
        self._settings = settings

    async def apply(self, seen: Iterable[LightningInvoice], *, add_index: int = 0,
                    settle_index: int = 0) -> list[DomainEvent]:
        """Record these reports (those of our invoices), and raise the stream cursors to the given
        indexes, in one unit of work; returns the events it committed."""
        reports = list(seen)
        return await retried(lambda: self._apply(reports, add_index, settle_index), on=ConcurrentUpdate,
                             why="another writer changed these invoices or payments meanwhile")

    async def _apply(self, reports: list[LightningInvoice], add_index: int, settle_index: int) -> list[DomainEvent]:
        async with self._uow() as uow:
            now = self._clock.now()
            ours = uow.invoices.by_hashes(r.payment_hash for r in reports)
            changed: dict[str, OrderInvoice] = {}
            for report in reports:
                invoice = changed.get(report.payment_hash) or ours.get(report.payment_hash)
                if invoice is not None and invoice.observe(report, now):
                    changed[invoice.payment_hash] = invoice
            settled = [i for i in changed.values() if i.settled_at is not None and i.amount_paid.value > 0]
            order_ids = {i.order_id for i in settled}
            requests = uow.requests.get_many(order_ids)
            payments = uow.payments.get_many(order_ids)
            events: list[DomainEvent] = []
            for invoice in changed.values():
                uow.invoices.save(invoice)
                events.extend(invoice.take_events())
            for invoice in settled:
                payment = payments.setdefault(invoice.order_id, Payment(invoice.order_id))
                payment.settle_lightning(requests[invoice.order_id], invoice.payment_hash,
                                         invoice.amount_paid.value, now)
            for order_id, payment in payments.items():
                payment.settle(requests[order_id], self._settings.thresholds, now)
                events.extend(payment.take_events())
            if payments:
                uow.payments.save(list(payments.values()))
            uow.record(events)
            self._raise_cursor(uow, ADD_INDEX, add_index)
            self._raise_cursor(uow, SETTLE_INDEX, settle_index)
            uow.commit()
        committed = uow.committed_events()
        await self._publisher.publish(committed)
        return committed

    @staticmethod
    def _raise_cursor(uow: Any, name: str, value: int) -> None:
        if value <= 0:
            return
        stored = uow.cursors.get(name)
        if stored is None or (stored.height or 0) < value:
            uow.cursors.set(name, MonitorCursor("", value))

    def cursors(self) -> tuple[int, int]:
        """The add and settle indexes up to which LND's stream was applied."""
        with self._uow.read() as uow:
            add, settle = uow.cursors.get(ADD_INDEX), uow.cursors.get(SETTLE_INDEX)
        return (add.height or 0) if add else 0, (settle.height or 0) if settle else 0

    async def poll(self) -> MonitorEvents:
        """Look up every invoice still open with us and apply what LND says of each; one LND
        cannot answer about is skipped (and reported), unless LND itself is down."""
        with self._uow.read() as uow:
            hashes = [i.payment_hash for i in uow.invoices.open()]
        if not hashes:
            return MonitorEvents()
        gate = asyncio.Semaphore(LOOKUP_CONCURRENCY)
        failed: list[ItemFailure] = []

        async def lookup(payment_hash: str) -> LightningInvoice | None:
            async with gate:
                try:
                    return await self._node.lookup_invoice(payment_hash)
                except NotFound:
                    log.warning("LND does not know our open invoice %s (was its database replaced?); "
                                "it stays open here", payment_hash)
                    return None
                except Exception as exc:  # noqa: BLE001 - this invoice is skipped; the others go on
                    failed.append(skipped("lightning", payment_hash, exc))
                    failed[-1].log()
                    return None

        seen = await asyncio.gather(*(lookup(h) for h in hashes))
        return MonitorEvents(await self.apply([s for s in seen if s is not None]), failed)

    async def refresh(self, payment_hash: str) -> None:
        """Bring one invoice up to date with LND, if LND answers."""
        try:
            seen = await self._node.lookup_invoice(payment_hash)
        except (LightningNodeError, NotFound, OSError) as exc:
            log.warning("LND did not answer about invoice %s (%s); showing what is stored", payment_hash, exc)
            return
        await self.apply([seen])


class ShowOrderInvoice:
    """The order's newest invoice; one still open is looked up at LND first."""

    def __init__(self, uow: UnitOfWorkFactory,
                 sync: Callable[[], InvoiceSync | Awaitable[InvoiceSync]] | None) -> None:
        self._uow = uow
        self._sync = sync   # None: LND is not configured, show what is stored

    async def __call__(self, order_id: str) -> dict[str, Any]:
        invoice = self._newest(order_id)
        if invoice.is_open and self._sync is not None:
            sync = await resolved(self._sync())
            await sync.refresh(invoice.payment_hash)
            invoice = self._newest(order_id)
        return invoice.to_dict()

    def _newest(self, order_id: str) -> OrderInvoice:
        with self._uow.read() as uow:
            if uow.requests.get(order_id) is None:
                raise NotFound(f"no order with id {order_id!r}")
            invoices = uow.invoices.for_order(order_id)
        if not invoices:
            raise NotFound(f"order {order_id} has no Lightning invoice (create one with `ln invoice create`)")
        return invoices[0]


class WatchInvoices:
    """Follow LND's invoice stream until stopped, resuming where the last applied report left off.

    After each (re)connect every invoice still open with us is looked up, since the stream
    carries no cancellation and replays settlements only by index: that lookup is what makes
    a settlement during a disconnect (or before the first connect) count."""

    def __init__(self, sync: InvoiceSync, node: LightningNode, *, retry_first: float = 1.0,
                 retry_max: float = 30.0) -> None:
        self._sync = sync
        self._node = node
        self._retry_first = retry_first
        self._retry_max = retry_max

    async def __call__(self, stop: asyncio.Event,
                       on_events: Callable[[list[DomainEvent]], None] | None = None,
                       connected: Callable[[], Awaitable[None] | None] | None = None) -> None:
        delay = self._retry_first
        while not stop.is_set():
            try:
                await self._follow(stop, on_events, connected)
                delay = self._retry_first
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - LND went away: reconnect with backoff
                log.warning("the LND invoice stream failed (%s: %s); reconnecting in %.0fs",
                            type(exc).__name__, exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, self._retry_max)

    async def _follow(self, stop: asyncio.Event, on_events: Callable[[list[DomainEvent]], None] | None,
                      connected: Callable[[], Awaitable[None] | None] | None) -> None:
        add_index, settle_index = self._sync.cursors()
        stream = self._node.subscribe_invoices(add_index, settle_index)
        iterator = stream.__aiter__()
        stopping = asyncio.ensure_future(stop.wait())
        # The subscription is opened alongside the lookups: whatever settles meanwhile is either
        # looked up or streamed (or both, which is harmless); the monitor's polls catch the rest.
        nxt = asyncio.ensure_future(iterator.__anext__())
        try:
            events = await self._sync.poll()
            if on_events and events:
                on_events(events)
            if connected is not None:
                maybe = connected()
                if asyncio.iscoroutine(maybe):
                    await maybe
            while True:
                done, _ = await asyncio.wait({nxt, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    return
                try:
                    report = nxt.result()
                except StopAsyncIteration:
                    return
                applied = await self._sync.apply([report], add_index=report.add_index,
                                                 settle_index=report.settle_index)
                if on_events and applied:
                    on_events(applied)
                nxt = asyncio.ensure_future(iterator.__anext__())
        finally:
            stopping.cancel()
            if not nxt.done():
                nxt.cancel()
                await asyncio.wait([nxt])
            close = getattr(stream, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - the stream is being dropped anyway
                    pass
