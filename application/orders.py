"""Use cases: create an order (a fresh deposit address), show an order."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable
from urllib.parse import quote

import attrs

from kaccy_bitcoin.domain.addresses import AddressEntry, MonitorCursor
from kaccy_bitcoin.domain.errors import InvalidOrder, NotFound
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import Payment, PaymentRequest
from kaccy_bitcoin.application.settings import PaymentSettings
from kaccy_bitcoin.ports.addresses import RECEIVE, AddressDeriver
from kaccy_bitcoin.ports.bitcoin_node import ChainBackend
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWork

UowFactory = Callable[[], UnitOfWork]


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

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def bip21(address: str, amount: Satoshis, label: str = "") -> str:
    uri = f"bitcoin:{address}?amount={amount.to_btc().rstrip('0').rstrip('.')}"
    if label:
        uri += f"&label={quote(label)}"
    return uri


class WatchRange:
    """Keeps the node's watch range `gap_limit` addresses ahead of what was handed out."""

    CURSOR = "watch-range:{chain}"

    def __init__(self, deriver: AddressDeriver, chain: ChainBackend, gap_limit: int) -> None:
        self._deriver = deriver
        self._chain = chain
        self._gap = gap_limit

    async def cover(self, uow: UnitOfWork, chain_index: int, issued: int) -> None:
        key = self.CURSOR.format(chain=chain_index)
        current = uow.cursors.get(key)
        watched_end = current.height if current and current.height is not None else 0
        if issued + self._gap <= watched_end:
            return
        new_end = issued + 2 * self._gap
        await self._chain.ensure_watching([(self._deriver.descriptor(chain_index), new_end - 1)])
        uow.cursors.set(key, MonitorCursor(block_hash="", height=new_end))


class CreateOrder:
    """Give an order a fresh receive address; the same order id again returns the same one."""

    def __init__(self, uow: UowFactory, deriver: AddressDeriver, watch: WatchRange, clock: Clock,
                 settings: PaymentSettings) -> None:
        self._uow = uow
        self._deriver = deriver
        self._watch = watch
        self._clock = clock
        self._settings = settings

    async def __call__(self, order_id: str, amount: Satoshis, *, expires_in: int | None = None,
                       label: str = "") -> dict[str, Any]:
        if expires_in is not None and expires_in <= 0:
            raise InvalidOrder(f"--expires-in must be a positive number of seconds, got {expires_in}")
        now = self._clock.now()
        async with self._uow() as uow:
            existing = uow.requests.get(order_id)
            if existing is not None:
                existing.check_same_terms(amount)
                return self._created(existing)
            index = uow.addresses.allocate(RECEIVE)
            address = self._deriver.address(RECEIVE, index)
            request = PaymentRequest(
                order_id=order_id, address=address, amount=amount, created_at=now,
                tolerance=self._settings.tolerance,
                expires_at=now + dt.timedelta(seconds=expires_in) if expires_in else None,
                label=label, derivation_index=index)
            uow.addresses.record(AddressEntry(address, RECEIVE, index, label, order_id, "receive"))
            uow.requests.add(request)
            uow.payments.save([Payment(order_id)])
            await self._watch.cover(uow, RECEIVE, uow.addresses.issued(RECEIVE))
            uow.commit()
        return self._created(request)

    @staticmethod
    def _created(request: PaymentRequest) -> dict[str, Any]:
        return {"order_id": request.order_id, "address": request.address,
                "amount_sat": request.amount.value, "bip21": bip21(request.address, request.amount, request.label)}


class ShowOrder:
    def __init__(self, uow: UowFactory) -> None:
        self._uow = uow

    async def __call__(self, order_id: str) -> OrderView:
        async with self._uow() as uow:
            request = uow.requests.get(order_id)
            if request is None:
                raise NotFound(f"no order with id {order_id!r}")
            payment = uow.payments.get(order_id) or Payment(order_id)
        depth = payment.confirmations(request)
        return OrderView(
            order_id=order_id, address=request.address, amount_sat=request.amount.value,
            received_sat=payment.received.value, status=payment.state.name.lower(),
            match=payment.match(request).value, confirmations=depth or 0, txids=payment.txids(),
            expires_at=request.expires_at.isoformat() if request.expires_at else None,
            label=request.label)
