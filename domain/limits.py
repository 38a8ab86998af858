"""Withdrawal limits: per user (hourly, daily, monthly, single) and for the whole platform (daily).

Windows are rolling and end at the moment of the request: `hourly` sums the user's
withdrawals of the last hour, `daily` of the last 24 hours, `monthly` of the last 30 days,
`platform` every withdrawal of the last 24 hours. A withdrawal counts from the moment it is
created until it is known that it paid nothing (cancelled, expired, voided: `returned`);
a withdrawal that may still pay out (signed, rejected by the node, broadcast, replaced by
its own RBF replacement) keeps counting. The check runs in the unit of work that reserves
the withdrawal's coins, under a lock on the user's and the platform's limits (storage), so
of two requests at once the second sees the first.

Why the windows are safe: the check at time t admits `amount` only if the live usage in
(t - w, t] plus `amount` stays within the limit. Usage is only added at the current time
and only ever removed otherwise, so for any later window (s - w, s] the entries in it
lie in (t' - w, t'] for the latest admitted entry t' in it, which was checked.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

import attrs

from kaccy_bitcoin.domain.errors import InvalidAmount, LimitExceeded

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
MONTH = dt.timedelta(days=30)
PLATFORM = "platform"   # the scope name of the platform-wide limits

USER_LIMITS = ("hourly", "daily", "monthly", "single")
WINDOWS = {"hourly": HOUR, "daily": DAY, "monthly": MONTH}


def _non_negative(name: str):  # noqa: ANN202
    def check(_instance, _attribute, value) -> None:  # noqa: ANN001
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidAmount(f"{name} must be a whole, non-negative number of sat, got {value!r}")
    return check


@attrs.frozen
class Limits:
    """The limits of one scope (a user, or the platform); None is no limit."""

    scope: str
    daily_sat: int | None = attrs.field(default=None, validator=_non_negative("--daily-sat"))
    monthly_sat: int | None = attrs.field(default=None, validator=_non_negative("--monthly-sat"))
    single_max_sat: int | None = attrs.field(default=None, validator=_non_negative("--single-max-sat"))
    hourly_sat: int | None = attrs.field(default=None, validator=_non_negative("--hourly-sat"))

    def merged(self, **changes: int | None) -> Limits:
        """These limits with the given ones replaced (None: keep the current value)."""
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, object]:
        if self.scope == PLATFORM:
            return {"platform": True, "platform_daily_sat": self.daily_sat}
        return {"user": self.scope, "daily_sat": self.daily_sat, "monthly_sat": self.monthly_sat,
                "single_max_sat": self.single_max_sat, "hourly_sat": self.hourly_sat}

    def by_name(self) -> dict[str, int | None]:
        return {"hourly": self.hourly_sat, "daily": self.daily_sat, "monthly": self.monthly_sat,
                "single": self.single_max_sat}


@attrs.frozen
class Usage:
    """One withdrawal's claim on the limits: its payout total, when it was made, whose."""

    withdrawal_id: str
    user: str | None
    amount_sat: int
    at: dt.datetime
    returned: bool = False
    destinations: tuple[str, ...] = ()   # the payout addresses (for the risk review's history)


def used_within(entries: Iterable[Usage], now: dt.datetime, window: dt.timedelta) -> int:
    """The live usage in the rolling window (now - window, now]."""
    start = now - window
    return sum(e.amount_sat for e in entries if not e.returned and start < e.at <= now)


def check(amount_sat: int, now: dt.datetime, user: Limits | None, user_usage: Iterable[Usage],
          platform: Limits | None, platform_usage: Iterable[Usage]) -> None:
    """Refuse (LimitExceeded) a withdrawal of `amount_sat` that would take the user or the
    platform past one of its limits; checked in the order single, hourly, daily, monthly, platform."""
    if amount_sat <= 0:
        raise InvalidAmount("a withdrawal's amount must be positive")
    user_usage = list(user_usage)
    if user is not None:
        single = user.single_max_sat
        if single is not None and amount_sat > single:
            raise LimitExceeded("single", single, single,
                                f"{amount_sat} sat is above the single-withdrawal limit of {single} sat "
                                f"for user {user.scope}")
        for name in ("hourly", "daily", "monthly"):
            limit = user.by_name()[name]
            if limit is None:
                continue
            remaining = max(limit - used_within(user_usage, now, WINDOWS[name]), 0)
            if amount_sat > remaining:
                raise LimitExceeded(name, limit, remaining,
                                    f"{amount_sat} sat would pass user {user.scope}'s {name} limit of {limit} sat "
                                    f"({remaining} sat remaining)")
    if platform is not None and platform.daily_sat is not None:
        limit = platform.daily_sat
        remaining = max(limit - used_within(platform_usage, now, DAY), 0)
        if amount_sat > remaining:
            raise LimitExceeded("platform", limit, remaining,
                                f"{amount_sat} sat would pass the platform's daily limit of {limit} sat "
                                f"({remaining} sat remaining)")


def near_limit(amount_sat: int, now: dt.datetime, user: Limits | None, user_usage: Iterable[Usage],
               share: float = 0.9) -> bool:
    """Whether the withdrawal takes the user to at least `share` of one of their limits
    (an amount "just under a limit", for the risk review)."""
    if user is None:
        return False
    user_usage = list(user_usage)
    single = user.single_max_sat
    if single and amount_sat >= share * single:
        return True
    for name in ("hourly", "daily", "monthly"):
        limit = user.by_name()[name]
        if limit and used_within(user_usage, now, WINDOWS[name]) + amount_sat >= share * limit:
            return True
    return False
