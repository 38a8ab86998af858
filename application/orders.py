"""Use cases: create an order (a fresh deposit address), show an order."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from typing import Any, Sequence
from urllib.parse import quote

import attrs

from kaccy_bitcoin.domain.addresses import AddressEntry
from kaccy_bitcoin.domain.errors import InvalidOrder, NotFound, OrderConflict
from kaccy_bitcoin.domain.lightning_orders import OrderInvoice
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import PaymentState
from kaccy_bitcoin.application.payjoin_offers import PayjoinSettings, ensure_session, payjoin_view, with_payjoin
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.ports.addresses import RECEIVE, AddressDeriver
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.service_store import IdempotencyReceipt
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory


log = logging.getLogger(__name__)


@attrs.frozen
class OrderView:
    order_id: str
    address: str
    amount_sat: int
    received_sat: int
    status: str
    match: str
    confirmations: int
    txids: list[str]
    expires_at: str | None
    label: str
    lightning: dict[str, str] | None = None   # {"payment_hash", "state"} of its Lightning invoice
    # Every output that paid it: {"txid", "vout", "amount_sat", "confirmations", "status", "zeroconf_risk"}.
    payments: list[dict[str, Any]] = attrs.field(factory=list)
    accepted_zeroconf: bool = False
    zeroconf_double_spend: dict[str, Any] | None = None   # {"at", "txids", "replaced_by", "amount_lost_sat"}
    checkout_url: str | None = None           # the customer's page (None: an order without a token)
    payjoin: dict[str, Any] | None = None     # {"txid", "contributed_sat"} when a payjoin paid it

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _expiry(now: dt.datetime, expires_in: int | None) -> dt.datetime | None:
    if expires_in is None:
        return None
    if expires_in <= 0:
        raise InvalidOrder(f"--expires-in must be a positive number of seconds, got {expires_in}")
    try:
        return now + dt.timedelta(seconds=expires_in)
    except OverflowError:
        raise InvalidOrder(f"--expires-in {expires_in} seconds is too far ahead: the expiry would be "
                           f"past {dt.datetime.max.year}-12-31") from None


def checkout_url(public_url: str, token: str | None) -> str | None:
    """Where the order's hosted checkout page is: KACCY_PUBLIC_URL + /pay/{token}, or the path alone."""
    return f"{public_url}/pay/{token}" if token else None


def new_checkout_token() -> str:
    """An unguessable capability: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


def bip21(address: str, amount: Satoshis, label: str = "") -> str:
    uri = f"bitcoin:{address}?amount={amount.to_btc().rstrip('0').rstrip('.')}"
    if label:
        uri += f"&label={quote(label)}"
    return uri


class WatchRange:
    """Keeps the node watching `gap_limit` addresses past the last one handed out on a chain.

    It talks to the node only, never to storage: call it after the address is committed and
    before the address is handed out, so no write lock is held while the node works. The node
    never narrows what it watches (other processes widen it too, and the node tops it up to its
    keypool), so the range it reports is noted here and the node is asked again only when an
    address falls outside it; each request reaches `gap_limit` further (half again as far as
    needed, once that is more), so a busy process asks about once per `gap_limit` addresses at
    first and ever more rarely as the range grows. When less than half of the last step is
    left, the range is widened in the background, so a steady stream of orders does not stop
    while the node imports (an address is still never handed out before the node watches past
    it).
    """

    def __init__(self, deriver: AddressDeriver, chain: ChainBackend, gap_limit: int) -> None:
        self._deriver = deriver
        self._chain = chain
        self._gap = gap_limit
        self._watched: dict[int, int] = {}  # chain -> last index the node is known to watch
        self._step: dict[int, int] = {}     # chain -> how far the last widening reached past what it needed
        self._asking: asyncio.Lock | None = None
        self._ahead: asyncio.Task | None = None   # the background widening, while it runs

    def covers(self, chain_index: int, issued: int) -> bool:
        """Whether the node is known to watch indexes 0 .. issued - 1 + gap_limit already (then
        `cover` asks it nothing): an address below `issued` may be handed out now."""
        return issued - 1 + self._gap <= self._watched.get(chain_index, -1)

    async def cover(self, chain_index: int, issued: int) -> None:
        """Make sure the node watches indexes 0 .. issued - 1 + gap_limit of the chain.

        Concurrent callers (a server creating many orders at once) ask the node one at a time:
        the first widens the range, and those waiting behind it usually find it wide enough.
        They do not wait for a widening running ahead in the background: the node lists what
        it watches first, so one that another process or the background already widened
        answers at once."""
        needed = issued - 1 + self._gap
        watched = self._watched.get(chain_index, -1)
        if needed <= watched:
            if watched - needed < self._step.get(chain_index, self._gap) // 2 and self._ahead is None:
                self._ahead = asyncio.create_task(self._widen_ahead(chain_index, watched + 1))
            return
        if self._asking is None:
            self._asking = asyncio.Lock()
        async with self._asking:
            if needed > self._watched.get(chain_index, -1):
                await self._widen(chain_index, needed)

    async def _widen(self, chain_index: int, needed: int) -> None:
        # Reach a gap further, or half again as far as needed once that is more: the node
        # re-derives the whole range on each import (~25 us an address), so steps growing
        # with the range keep its total work linear in the orders, not quadratic.
        step = max(self._gap, needed // 2)
        (end,) = await self._chain.ensure_watching([(self._deriver.descriptor(chain_index), needed + step)])
        if end > self._watched.get(chain_index, -1):
            self._watched[chain_index] = end
            self._step[chain_index] = step

    async def _widen_ahead(self, chain_index: int, needed: int) -> None:
        """Widen before anyone has to wait; a failure here is only a missed head start (the
        next caller past the range asks the node itself, and reports what goes wrong)."""
        try:
            await self._widen(chain_index, needed)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("widening the watched range ahead of time failed: %s", exc)
        finally:
            self._ahead = None


class CreateOrder:
    """Give an order a fresh receive address; the same order id again returns the same one.

    The address index is taken in a first, very short unit of work (so concurrent creations,
    in this process or others, do not queue behind each other's writes on the chain's counter);
    the address and the order then commit together in a second one. A crash between the two
    leaves one index unused, never one used twice. The node is asked to watch the address only
    after that commit, and before it is returned. Calling again with the same order id makes
    sure of the watching again, so a failure between the two heals on retry; two creations of
    one order id at once both answer with the one that committed.
    """

    def __init__(self, uow: UnitOfWorkFactory, deriver: AddressDeriver, watch: WatchRange, clock: Clock,
                 settings: PaymentSettings, wallets: Any = None, payjoin: PayjoinSettings | None = None) -> None:
        self._uow = uow
        self._deriver = deriver
        self._watch = watch
        self._clock = clock
        self._settings = settings
        self._wallets = wallets   # application.wallets.WalletDirectory: orders of other wallets than default
        self._payjoin = payjoin   # `pj=` in the BIP21 URI of the default wallet's orders, when enabled

    async def __call__(self, order_id: str, amount: Satoshis, *, expires_in: int | None = None,
                       label: str = "", wallet: str | None = None,
                       receipt: IdempotencyReceipt | None = None) -> dict[str, Any]:
        """`wallet`: the wallet the deposit address is of (None: `default`, KACCY_XPUB's).
        `receipt`: the request's Idempotency-Key, claimed in the first unit of work and answered
        in the order's own when the node already watches the address (else the caller answers
        once this returns); IdempotencyKeyTaken (nothing written) when the key has a record."""
        now = self._clock.now()
        expires_at = _expiry(now, expires_in)
        deriver, watch, book = self._deriver, self._watch, RECEIVE
        payjoin = self._payjoin is not None and self._payjoin.enabled and wallet in (None, "default")
        token = None
        if wallet not in (None, "default"):
            if self._wallets is None:
                raise InvalidOrder("this application has no wallets besides `default`")
            opened = self._wallets.get(wallet)
            deriver, watch, book = opened.deriver, opened.watch, opened.book_chain(RECEIVE)
        async with self._uow() as uow:
            if receipt is not None:
                receipt.claim(uow)
            request = uow.requests.get(order_id)
            if request is None:
                index = uow.addresses.allocate(book)
                uow.commit()   # the index alone, so nobody waits on the counter while the order is written
            else:
                book_of_order = self._book_of(uow, request, amount)
                if payjoin and book_of_order == book:
                    token = ensure_session(uow, order_id, now).token
                if receipt is not None or token is not None:
                    uow.commit()
        if request is None:
            address = deriver.address(RECEIVE, index)
            request = PaymentRequest.new(
                order_id=order_id, address=address, amount=amount, created_at=now,
                tolerance=self._settings.tolerance, expires_at=expires_at, label=label, derivation_index=index,
                checkout_token=new_checkout_token())
            try:
                async with self._uow() as uow:
                    uow.addresses.record(AddressEntry(address, book, index, label, order_id, "receive"))
                    uow.requests.add(request)
                    uow.payments.save([Payment(order_id)])
                    if payjoin:
                        token = ensure_session(uow, order_id, now).token
                    if receipt is not None and watch.covers(RECEIVE, index + 1):
                        # The node watches the address already: this commit makes the answer final.
                        receipt.answer(uow, self._created(request, token))
                    uow.commit()
                book_of_order = book
            except OrderConflict:
                # Another request created this order id since we looked: answer as it did (the
                # index we took stays unused, a gap the watch range already covers).
                with self._uow.read() as uow:
                    request = uow.requests.get(order_id)
                    if request is None:
                        raise
                    book_of_order = self._book_of(uow, request, amount)
                    found = uow.payjoins.for_orders([order_id]).get(order_id) if payjoin else None
                    token = found.token if found is not None else None
        if book_of_order != book:   # the same order id again, asked of another wallet
            raise OrderConflict(f"order {order_id} exists with a deposit address of another wallet")
        if request.derivation_index is not None:  # set on every order this use case creates
            await watch.cover(RECEIVE, request.derivation_index + 1)
        return self._created(request, token)

    async def prepare(self) -> None:
        """Have the node watch the next gap of the default wallet's receive addresses now (and
        its watch wallet exist), so the first order a server creates does not wait on the node."""
        with self._uow.read() as uow:
            issued = uow.addresses.issued(RECEIVE)
        await self._watch.cover(RECEIVE, max(issued, 1))

    @staticmethod
    def _book_of(uow: Any, request: PaymentRequest, amount: Satoshis) -> int:
        """The address book chain of an existing order, once its terms are checked against these."""
        request.check_same_terms(amount)
        entry = uow.addresses.get(request.address)
        return entry.chain if entry is not None else RECEIVE

    def _created(self, request: PaymentRequest, token: str | None) -> dict[str, Any]:
        uri = with_payjoin(bip21(request.address, request.amount, request.label), self._payjoin, token)
        return {"order_id": request.order_id, "address": request.address, "amount_sat": request.amount.value,
                "bip21": uri, "checkout_url": checkout_url(self._settings.public_url, request.checkout_token)}


def order_view(request: PaymentRequest, payment: Payment | None,
               invoices: Sequence[OrderInvoice] = (), public_url: str = "", payjoin: Any = None) -> OrderView:
    """What `order show` prints; `invoices` newest first (the one that paid the order is shown,
    else the newest)."""
    payment = payment or Payment(request.order_id)
    invoice = next((i for i in invoices if i.payment_hash in payment.lightning), invoices[0] if invoices else None)
    depth = payment.confirmations(request)
    return OrderView(
        order_id=request.order_id, address=request.address, amount_sat=request.amount.value,
        received_sat=payment.received.value, status=payment.state.name.lower(),
        match=payment.match(request).value, confirmations=depth or 0, txids=payment.txids(),
        expires_at=request.expires_at.isoformat() if request.expires_at else None,
        label=request.label,
        lightning={"payment_hash": invoice.payment_hash, "state": invoice.status} if invoice else None,
        payments=[o.to_dict() for o in sorted(payment.outputs.values(), key=lambda o: (
            o.first_seen, o.outpoint.txid.value, o.outpoint.vout))],
        accepted_zeroconf=payment.zeroconf is not None,
        zeroconf_double_spend=(payment.zeroconf.double_spend.to_dict()
                               if payment.zeroconf and payment.zeroconf.double_spend else None),
        checkout_url=checkout_url(public_url, request.checkout_token),
        payjoin=payjoin_view(payjoin, payment.txids()))


class ShowOrder:
    def __init__(self, uow: UnitOfWorkFactory, settings: PaymentSettings | None = None) -> None:
        self._uow = uow
        self._public_url = settings.public_url if settings else ""

    async def __call__(self, order_id: str) -> OrderView:
        with self._uow.read() as uow:   # reading only: on SQLite it waits for no writer
            request = uow.requests.get(order_id)
            if request is None:
                raise NotFound(f"no order with id {order_id!r}")
            payment = uow.payments.get(order_id)
            invoices = uow.invoices.for_order(order_id)
            payjoin = uow.payjoins.for_orders([order_id]).get(order_id)
        return order_view(request, payment, invoices, self._public_url, payjoin)


ORDER_STATUSES = tuple(s.name.lower() for s in PaymentState)
LIST_MAX = 500


class ListOrders:
    """A page of orders by order id: `{"orders": [views], "next": ID or None}`; pass `next` back
    as `after` for the following page (None: this was the last)."""

    def __init__(self, uow: UnitOfWorkFactory, settings: PaymentSettings | None = None) -> None:
        self._uow = uow
        self._public_url = settings.public_url if settings else ""

    async def __call__(self, *, status: str | None = None, label: str | None = None, after: str | None = None,
                       limit: int = 100) -> dict[str, Any]:
        if status is not None and status not in ORDER_STATUSES:
            raise InvalidOrder(f"status must be one of {', '.join(ORDER_STATUSES)}, got {status!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_MAX:
            raise InvalidOrder(f"limit must be a whole number from 1 to {LIST_MAX}, got {limit!r}")
        with self._uow.read() as uow:
            requests = uow.requests.search(state=status.upper() if status else None, label=label, after=after,
                                           limit=limit)
            ids = [r.order_id for r in requests]
            payments = uow.payments.get_many(ids)
            invoices = uow.invoices.for_orders(ids)
            payjoins = uow.payjoins.for_orders(ids)
        views = [order_view(r, payments.get(r.order_id), [invoices[r.order_id]] if r.order_id in invoices else [],
                            self._public_url, payjoins.get(r.order_id)).to_dict() for r in requests]
        return {"orders": views, "next": requests[-1].order_id if len(requests) == limit else None}
