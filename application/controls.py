"""Operator controls: setting withdrawal limits, and the audit trail (verify the hash chain,
query entries for an investigation). Each operator action is itself an audited event."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Iterator

from kaccy_bitcoin.domain import audit
from kaccy_bitcoin.domain.errors import InvalidAmount, InvalidUser
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.domain.limits import PLATFORM, Limits
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWork, UnitOfWorkFactory

VERIFY_PAGE = 5000


def _limits_view(user: Limits | None, platform: Limits | None, scope_user: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if scope_user is not None:
        out = (user or Limits(scope_user)).to_dict()
    if platform is not None or scope_user is None:
        out["platform_daily_sat"] = platform.daily_sat if platform is not None else None
    return out


class SetLimits:
    """`limits set`: merge the given limits into the stored ones (an option not given keeps
    its value) and print what is stored."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, user: str | None = None, *, daily_sat: int | None = None,
                       monthly_sat: int | None = None, single_max_sat: int | None = None,
                       hourly_sat: int | None = None, platform_daily_sat: int | None = None,
                       by: str = "operator") -> dict[str, Any]:
        user_given = any(v is not None for v in (daily_sat, monthly_sat, single_max_sat, hourly_sat))
        if user_given and user is None:
            raise InvalidAmount("--daily-sat, --monthly-sat, --single-max-sat and --hourly-sat need --user "
                                "(the platform's limit is --platform-daily-sat)")
        if not user_given and platform_daily_sat is None:
            raise InvalidAmount("nothing to set: give --user U with at least one limit, or --platform-daily-sat N "
                                "(`limits show` prints them)")
        if user is not None and (not user.strip() or len(user) > 128 or user == PLATFORM):
            raise InvalidUser(f"--user must be a name of 1 to 128 characters other than {PLATFORM!r}")
        now = self._clock.now()
        async with self._uow() as u:
            # The platform's row first, then the user's: the order every check locks them in.
            mine = platform = None
            if platform_daily_sat is not None:
                platform = (u.limits.get(PLATFORM) or Limits(PLATFORM)).merged(daily_sat=platform_daily_sat)
                u.limits.set(platform, now)
            elif user is None:
                platform = u.limits.get(PLATFORM)
            if user is not None:
                mine = (u.limits.get(user) or Limits(user)).merged(
                    daily_sat=daily_sat, monthly_sat=monthly_sat, single_max_sat=single_max_sat,
                    hourly_sat=hourly_sat)
                u.limits.set(mine, now)
            shown = _limits_view(mine, platform, user)
            u.record([DomainEvent(f"limits_set:{uuid.uuid4().hex}", "limits_set", user or PLATFORM, now,
                                  dict(shown), by)])
            u.commit()
        return shown


class ShowLimits:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, user: str | None = None) -> dict[str, Any]:
        with self._uow.read() as u:
            return _limits_view(u.limits.get(user) if user else None, u.limits.get(PLATFORM), user)


def _pages(u: UnitOfWork) -> Iterator[audit.AuditEntry]:
    after = 0
    while True:
        page = u.audit.entries(after=after, limit=VERIFY_PAGE)
        yield from page
        if len(page) < VERIFY_PAGE:
            return
        after = page[-1].seq


class VerifyAudit:
    """`audit verify`: the hash chain from the first entry to the last number handed out."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self) -> dict[str, Any]:
        with self._uow.read() as u:
            return audit.verify(_pages(u), u.audit.handed_out())


class QueryAudit:
    """`audit query`: the entries about a subject and/or since a time, oldest first."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, subject: str | None = None, since: dt.datetime | None = None,
                       limit: int = 1000) -> dict[str, Any]:
        with self._uow.read() as u:
            found = u.audit.entries(subject=subject, since=since, limit=limit)
        return {"entries": [e.to_dict() for e in found]}
