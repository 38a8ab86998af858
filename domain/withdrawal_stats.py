"""Totals over confirmed withdrawals, for `kaccy-bitcoin stats`."""
from __future__ import annotations

from typing import Iterable

import attrs

from kaccy_bitcoin.domain.withdrawals import Withdrawal


@attrs.frozen
class ConfirmedTotals:
    count: int
    volume_out: int                          # payouts, change excluded
    fees: int
    average_confirmation_seconds: int | None  # broadcast -> first confirmation, rounded


def confirmation_seconds(w: Withdrawal) -> float | None:
    """From the first time the withdrawal was on the network to the first confirmation seen."""
    sent = next((t.at for t in w.machine.history if t.dest == "BROADCAST"), None)
    confirmed = next((t.at for t in w.machine.history if t.trigger == "confirm"), None)
    if sent is None or confirmed is None or confirmed < sent:
        return None
    return (confirmed - sent).total_seconds()


def confirmed_totals(withdrawals: Iterable[Withdrawal]) -> ConfirmedTotals:
    done = list(withdrawals)
    times = [s for s in (confirmation_seconds(w) for w in done) if s is not None]
    return ConfirmedTotals(len(done), sum(w.payout_total.value for w in done), sum(w.fee.value for w in done),
                           round(sum(times) / len(times)) if times else None)


def confirmed_at(w: Withdrawal):  # noqa: ANN201 - dt.datetime | None
    """When the withdrawal's transaction was first seen confirmed."""
    return next((t.at for t in w.machine.history if t.trigger == "confirm"), None)


def daily_series(days: list, incoming: Iterable, outgoing: Iterable) -> list[dict]:
    """Sat in and out per UTC day over `days` (dates, oldest first), from (moment, sat) pairs;
    moments outside those days are left out."""
    slots = {day: [0, 0] for day in days}
    for side, flows in ((0, incoming), (1, outgoing)):
        for at, sat in flows:
            slot = slots.get(at.date())
            if slot is not None:
                slot[side] += sat
    return [{"day": day.isoformat(), "in_sat": slots[day][0], "out_sat": slots[day][1]} for day in days]
