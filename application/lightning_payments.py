"""Use cases for paying out over Lightning and looking at the channels (LND).

A Lightning payout goes through the transaction manager's pipeline, as a withdrawal does:

1. limits: what it claims (amount + fee limit, rounded up to the sat) against the user's and
   the platform's limits, a first look, then the binding check under the limits' locks in the
   unit of work that records the payout and takes its claim;
2. risk: the rules of domain/risk.py, the payee's node key as the destination; at or above
   the review score the payout is HELD until an operator approves it (`withdraw approve`);
3. tier: Lightning spends LND's channels, hot money: held to the hottest custody tier's cap;
4. audit: `ln_payment` (and `ln_payment_held`) with the record, then `ln_payment_sent`
   (committed before LND is called), `ln_payment_succeeded` or `ln_payment_failed`.

The fee limit is capped (KACCY_LN_MAX_FEE_PPM of the amount, `fee_too_high` above it). The
claim is given back when LND says FAILED (or refuses to start the payment), lowered to the fee
actually paid when it says SUCCEEDED, and kept while the payment may be in flight.
"""
from __future__ import annotations

import uuid
from typing import Any

import attrs

from kaccy_bitcoin.application.transaction_manager import ControlSettings, assess_payout, check_limits, check_user
from kaccy_bitcoin.domain import limits as limit_rules
from kaccy_bitcoin.domain.custody import CustodyPolicy
from kaccy_bitcoin.domain.errors import InvalidAmount, InvalidOperator, NotFound, PaymentConflict
from kaccy_bitcoin.domain.lightning_payouts import DEFAULT_MAX_FEE_PPM, LightningPayout, fee_limit
from kaccy_bitcoin.domain.lightning_payout_state import LightningPayoutState
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.lightning import LightningNode, LightningNodeError, LightningNodeUnreachable
from kaccy_bitcoin.ports.storage import UnitOfWork, UnitOfWorkFactory


@attrs.frozen
class LightningPayoutSettings:
    max_fee_ppm: int = DEFAULT_MAX_FEE_PPM   # KACCY_LN_MAX_FEE_PPM

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_fee_ppm, bool) or not 0 <= self.max_fee_ppm <= 1_000_000:
            raise InvalidAmount(f"KACCY_LN_MAX_FEE_PPM must be from 0 to 1000000, got {self.max_fee_ppm}")


def load_payout(u: UnitOfWork, payment_id: str) -> LightningPayout:
    found = u.ln_payouts.get(payment_id)
    if found is None:
        raise NotFound(f"no Lightning payment with id {payment_id!r}")
    return found


class SendLightningPayout:
    """Hand an admitted (or approved) payout to LND and record its answer: `ln send`, and the
    second half of `ln pay`."""

    def __init__(self, node: LightningNode, uow: UnitOfWorkFactory, clock: Clock, publisher: EventPublisher) -> None:
        self._node, self._uow, self._clock, self._publisher = node, uow, clock, publisher

    async def __call__(self, payment_id: str) -> dict[str, Any]:
        async with self._uow() as u:
            payout = load_payout(u, payment_id)
            first = payout.send(self._clock.now())   # refused while HELD; nothing to send once final
            if first is not None:
                u.ln_payouts.save(payout)
                u.record([first])
                u.commit()
        await self._publisher.publish(u.committed_events())
        if first is None:   # in flight already (a crash, a cut stream): where does LND stand?
            tracked = await self._node.track_payment(payout.payment_hash)
            if tracked is not None:
                return await self._record(payment_id, lambda p, now: p.settle(tracked, now))
        # LND has no payment of this hash: whatever it answers is about this call alone.
        try:
            result = await self._node.pay(payout.payment_request, max_fee=payout.max_fee)
        except (LightningNodeUnreachable, ConnectionError):
            raise    # it may be in flight: it stays so, its claim kept (`ln send` asks again)
        except LightningNodeError as exc:
            reason = str(exc)
            await self._record(payment_id, lambda p, now: p.refused(reason, now))
            raise
        return await self._record(payment_id, lambda p, now: p.settle(result, now))

    async def _record(self, payment_id: str, outcome) -> dict[str, Any]:  # noqa: ANN001
        async with self._uow() as u:
            payout = load_payout(u, payment_id)
            now = self._clock.now()
            event = outcome(payout, now)
            if event is not None:
                if payout.pays_nothing:
                    u.limits.give_back(payout.payment_id)
                else:
                    u.limits.adjust(payout.payment_id, payout.claim_sat)
                u.ln_payouts.save(payout)
                u.record([event])
                u.commit()
        await self._publisher.publish(u.committed_events())
        return payout.view()


class PayInvoice:
    """`ln pay`: admit a BOLT11 request through the controls, then (unless held) pay it and
    wait for LND's final answer."""

    def __init__(self, node: LightningNode, uow: UnitOfWorkFactory, clock: Clock, publisher: EventPublisher,
                 controls: ControlSettings, settings: LightningPayoutSettings, sender: SendLightningPayout,
                 custody: CustodyPolicy | None = None) -> None:
        self._node, self._uow, self._clock, self._publisher = node, uow, clock, publisher
        self._controls, self._settings, self._sender = controls, settings, sender
        self._custody = custody or CustodyPolicy()

    async def __call__(self, payment_request: str, max_fee_sat: int | None = None,
                       user: str | None = None) -> dict[str, Any]:
        payout = await self.request(payment_request, max_fee_sat, user)
        if payout.state is LightningPayoutState.HELD:
            return payout.view()
        return await self._sender(payout.payment_id)

    async def request(self, payment_request: str, max_fee_sat: int | None = None,
                      user: str | None = None) -> LightningPayout:
        """The payout recorded, its claim taken, PENDING or HELD; nothing sent."""
        user = check_user(user)
        if not payment_request.strip():
            raise InvalidAmount("a payment request (BOLT11) is needed")
        decoded = await self._node.decode_payment_request(payment_request.strip())
        if decoded.amount.value <= 0:
            raise InvalidAmount("the payment request names no amount; only requests with an amount can be paid out")
        payout = LightningPayout(uuid.uuid4().hex, payment_request.strip(), decoded.payment_hash, decoded.destination,
                                 decoded.amount, fee_limit(decoded.amount, max_fee_sat, self._settings.max_fee_ppm),
                                 self._clock.now(), user=user)
        claim, destinations = payout.claim_sat, (decoded.destination,)
        with self._uow.read() as u:
            check_limits(u, user, claim, self._clock.now(), lock=False)                        # 1. limits
            self._check_new(u, payout)
        self._custody.check_lightning(claim)                                                     # 3. tier
        async with self._uow() as u:
            now = self._clock.now()
            check_limits(u, user, claim, now, lock=True)
            self._check_new(u, payout)
            # 2. risk, under the limits' locks: the history it reads holds every payout committed
            # before this one (concurrent requests cannot slip past velocity/rapid_succession).
            ours = list(destinations) if u.invoices.get(payout.payment_hash) is not None else []
            risk = assess_payout(u, now, user, claim, destinations, ours)
            held = payout.review(risk, self._controls.review_score, now)
            u.ln_payouts.add(payout)
            u.limits.take(limit_rules.Usage(payout.payment_id, user, claim, now, destinations=destinations))
            u.record([payout.event("ln_payment", now, user=user, destination=payout.destination)]   # 4. audit
                     + ([held] if held else []))
            u.commit()
        await self._publisher.publish(u.committed_events())
        return payout

    @staticmethod
    def _check_new(u: UnitOfWork, payout: LightningPayout) -> None:
        live = [p for p in u.ln_payouts.for_hash(payout.payment_hash) if not p.pays_nothing]
        if live:
            raise PaymentConflict(f"payment hash {payout.payment_hash} is already being paid or was paid by "
                                  f"Lightning payment {live[0].payment_id} ({live[0].name})")


class ApproveLightningPayout:
    """An operator releases a payout the risk review held: PENDING, payable with `ln send`."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, payment_id: str, by: str) -> dict[str, Any]:
        if not by.strip():
            raise InvalidOperator("--by must name the operator who approves")
        async with self._uow() as u:
            payout = load_payout(u, payment_id)
            event = payout.approve(by.strip(), self._clock.now())
            u.ln_payouts.save(payout)
            u.record([event])
            u.commit()
        return {"payment_id": payment_id, "state": payout.name}


class CancelLightningPayout:
    """An operator refuses a held (or never sent) payout: its claim comes back."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, payment_id: str, by: str = "operator") -> dict[str, Any]:
        async with self._uow() as u:
            payout = load_payout(u, payment_id)
            event = payout.cancel(by, self._clock.now())
            u.limits.give_back(payment_id)
            u.ln_payouts.save(payout)
            u.record([event])
            u.commit()
        return {"payment_id": payment_id, "state": payout.name}


class PayoutById:
    """`withdraw approve` and `withdraw cancel` (and their routes) act on any held payout by its
    id: a withdrawal's, else a Lightning payment's."""

    def __init__(self, uow: UnitOfWorkFactory, withdrawal: Any, lightning: Any) -> None:
        self._uow, self._withdrawal, self._lightning = uow, withdrawal, lightning

    async def __call__(self, payout_id: str, *by: str) -> dict[str, Any]:
        with self._uow.read() as u:
            lightning = u.withdrawals.get(payout_id) is None and u.ln_payouts.get(payout_id) is not None
        return await (self._lightning if lightning else self._withdrawal)(payout_id, *by)


class ShowLightningPayout:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, payment_id: str) -> dict[str, Any]:
        with self._uow.read() as u:
            return load_payout(u, payment_id).view()


class ListChannels:
    def __init__(self, node: LightningNode) -> None:
        self._node = node

    async def __call__(self) -> dict[str, Any]:
        return {"channels": [{"channel_id": c.channel_id, "capacity_sat": c.capacity_sat,
                              "local_balance_sat": c.local_balance_sat, "remote_balance_sat": c.remote_balance_sat,
                              "active": c.active} for c in await self._node.channels()]}
