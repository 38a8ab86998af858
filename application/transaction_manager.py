"""The transaction manager: the one way a withdrawal request goes out, in the seed's order.

    limits -> risk -> wallet/tier -> coin selection -> PSBT -> (signing -> broadcast) -> audit

1. limits: a first look without locks (a request already over a limit fails before the node
   is asked anything), then the binding check in the unit of work that reserves the coins,
   under the limits' row locks (storage), where the withdrawal's amount is taken too;
2. risk: the explainable rules of domain/risk.py over the user's history, read in that same
   locked unit of work (no concurrent request slips past `velocity` or `rapid_succession`); at
   or above the review score the withdrawal is HELD (event `withdrawal_held`, which the
   notifier sends on);
3. wallet/tier: `WalletRouting` picks the wallet (and so the builder) that pays: the one named,
   else the custody tier whose band holds the amount (KACCY_CUSTODY_TIERS), else `default`; a
   wallet of a capped tier refuses more than its cap (`tier_exceeded`). What goes to our own
   addresses (a sweep or refill between our wallets) counts against no cap;
4-5. coin selection and the PSBT: the wallet's WithdrawalBuilder;
6-7. signing and broadcast: SignWithdrawal and BroadcastWithdrawal (`process` runs them too;
   `withdraw create` stops at the PSBT, as an exchange signs elsewhere);
8. audit: every step commits its event with its state change (`withdrawal_created`, `_held`,
   `_signed`, `_sent`, ...), hash-chained in the audit log.

Every other payout takes the same steps with the functions below: a batch RBF's new payouts
(application/fee_bumping.py) and Lightning payouts (application/lightning_payments.py).
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Sequence

import attrs

from kaccy_bitcoin.application.retry import retried
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.application.withdrawals import BroadcastWithdrawal, SignWithdrawal, record_new, view
from kaccy_bitcoin.domain import limits as limit_rules
from kaccy_bitcoin.domain.custody import CustodyPolicy
from kaccy_bitcoin.domain.errors import CoinsReserved, InvalidAmount, InvalidUser
from kaccy_bitcoin.domain.money import FeeRate, Satoshis
from kaccy_bitcoin.domain.psbt_state import PsbtState
from kaccy_bitcoin.domain.risk import DEFAULT_REVIEW_SCORE, RiskAssessment, assess
from kaccy_bitcoin.domain.withdrawals import PAYOUT
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.storage import UnitOfWork, UnitOfWorkFactory

DEFAULT_WALLET = "default"
# Concurrent requests pick the same best coins; each retry re-reads the reservations, so a
# request loses at most once to every other request running with it.
COIN_RACE_RETRIES = 25


@attrs.frozen
class ControlSettings:
    review_score: int = DEFAULT_REVIEW_SCORE   # KACCY_REVIEW_SCORE

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.review_score <= 101:
            raise InvalidAmount(f"the review score must be from 0 to 101, got {self.review_score}")


class WalletRouting:
    """Which wallet pays a withdrawal: the one requested, else the custody tier of the amount,
    else `default`."""

    def __init__(self, builder: WithdrawalBuilder, custody: CustodyPolicy | None = None) -> None:
        self._builder = builder
        self._custody = custody or CustodyPolicy()

    def route(self, amount: Satoshis, requested: str | None = None) -> tuple[str, WithdrawalBuilder]:
        """The wallet's name and the builder that selects its coins and makes its PSBT;
        `amount`: what leaves the platform (TierExceeded over the wallet's tier cap)."""
        wallet = requested or self._custody.choose(amount.value) or DEFAULT_WALLET
        self._custody.check(wallet, amount.value)
        return wallet, self._builder.of(wallet)


def check_user(user: str | None) -> str | None:
    if user is None:
        return None
    if not user.strip() or len(user) > 128 or user == limit_rules.PLATFORM:
        raise InvalidUser(f"--user must be a name of 1 to 128 characters other than {limit_rules.PLATFORM!r}, "
                          f"got {user!r}")
    return user


def check_limits(u: UnitOfWork, user: str | None, amount_sat: int, now: dt.datetime, *, lock: bool) -> None:
    """LimitExceeded unless the user and the platform can take `amount_sat` more now. With
    `lock`, the limits' rows stay locked until the unit of work ends: its caller takes the
    amount (LimitStore.take) before committing, so the next check sees it."""
    scopes = [limit_rules.PLATFORM] + ([user] if user is not None else [])
    if lock:
        found = u.limits.lock(scopes)
    else:
        found = {s: x for s in scopes if (x := u.limits.get(s)) is not None}
    mine, platform = found.get(user) if user is not None else None, found.get(limit_rules.PLATFORM)
    user_usage = u.limits.user_usage(user, now - limit_rules.MONTH) if mine is not None else []
    platform_usage = u.limits.platform_usage(now - limit_rules.DAY) if platform is not None else []
    limit_rules.check(amount_sat, now, mine, user_usage, platform, platform_usage)


def own_deposit_addresses(u: UnitOfWork, destinations: Sequence[str]) -> list[str]:
    """Those of `destinations` that are a customer's deposit address (any wallet's); a transfer
    address of our own wallets (a sweep or refill) is not suspicious."""
    own = []
    for d in destinations:
        entry = u.addresses.get(d)
        if entry is not None and entry.purpose == "receive" and entry.order_id is not None:
            own.append(d)
    return own


def assess_payout(u: UnitOfWork, now: dt.datetime, user: str | None, amount: int, destinations: Sequence[str],
                  own: Sequence[str]) -> RiskAssessment:
    """The risk review of any payout (a withdrawal, a batch RBF's new payouts, a Lightning
    payment) of `amount` sat to `destinations`, over `user`'s history; `own`: those of the
    destinations that are our own customers'."""
    history = u.limits.user_usage(user, now - limit_rules.MONTH) if user is not None else []
    limits = u.limits.get(user) if user is not None else None
    return assess(amount, tuple(destinations), now, user=user, history=history, own_addresses=own, limits=limits)


class TransactionManager:
    def __init__(self, builder: WithdrawalBuilder, uow: UnitOfWorkFactory, clock: Clock,
                 publisher: EventPublisher, settings: ControlSettings, custody: CustodyPolicy | None = None,
                 signing: SignWithdrawal | None = None, broadcasting: BroadcastWithdrawal | None = None) -> None:
        self._uow, self._clock, self._publisher, self._settings = uow, clock, publisher, settings
        self._wallets = WalletRouting(builder, custody)
        self._signing, self._broadcasting = signing, broadcasting

    async def __call__(self, payouts: Sequence[tuple[str, int]], fee_rate: FeeRate | None = None,
                       user: str | None = None, wallet: str | None = None, kind: str = PAYOUT) -> dict[str, Any]:
        """A new withdrawal up to its unsigned PSBT (or HELD for review): `withdraw create`.
        `wallet`: the wallet that pays (None: the custody tier of the amount, else `default`);
        `kind`: what it is for (`payout`, or `swap` for an atomic swap's lock)."""
        user = check_user(user)
        parsed = self._wallets.route(Satoshis(0), DEFAULT_WALLET)[1].parse_payouts(payouts)
        amount = sum(v.value for _, v in parsed)
        destinations = tuple(a.value for a, _ in parsed)
        with self._uow.read() as u:
            check_limits(u, user, amount, self._clock.now(), lock=False)                   # 1. limits
            leaving = sum(v.value for a, v in parsed if u.addresses.get(a.value) is None)
        wallet, builder = self._wallets.route(Satoshis(leaving), wallet)                  # 3. wallet/tier
        rate = await builder.fee_rate(fee_rate)

        async def attempt() -> dict[str, Any]:
            w = await builder.propose(uuid.uuid4().hex, parsed, rate)                      # 4-5. coins, PSBT
            w.user, w.kind = user, kind
            async with self._uow() as u:
                now = self._clock.now()
                check_limits(u, user, amount, now, lock=True)
                # 2. risk, under the limits' locks: the history it reads holds every withdrawal
                # committed before this one (a concurrent request cannot slip past velocity).
                risk = self._assess(u, user, amount, destinations)
                held = w.review(risk, self._settings.review_score, now)
                record_new(u, w, (), now)                                                  # 8. audit
                u.limits.take(limit_rules.Usage(w.withdrawal_id, user, amount, now, destinations=destinations))
                u.record([held] if held else [])
                u.commit()
            await self._publisher.publish(u.committed_events())
            return view(w)

        return await retried(attempt, on=CoinsReserved, why="a coin was reserved by another withdrawal meanwhile",
                             times=COIN_RACE_RETRIES)

    def _assess(self, u: UnitOfWork, user: str | None, amount: int, destinations: tuple[str, ...]) -> RiskAssessment:
        return assess_payout(u, self._clock.now(), user, amount, destinations, own_deposit_addresses(u, destinations))

    async def process(self, payouts: Sequence[tuple[str, int]], signer: str, fee_rate: FeeRate | None = None,
                      user: str | None = None) -> dict[str, Any]:
        """The whole way for the library: request, then (unless the risk review held it) sign with
        `signer` and broadcast. Returns the last step's answer, with the withdrawal's risk."""
        if self._signing is None or self._broadcasting is None:
            raise RuntimeError("this transaction manager was built without signing and broadcasting")
        created = await self(payouts, fee_rate, user)
        if created["state"] == PsbtState.HELD.name.lower():
            return created
        signed = await self._signing(created["withdrawal_id"], signer)
        if signed["state"] != PsbtState.SIGNED.name.lower():
            return {**signed, "risk": created["risk"]}
        return {**await self._broadcasting(created["withdrawal_id"]), "risk": created["risk"]}
