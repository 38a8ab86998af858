"""`kaccy-bitcoin stats`: what came in, what went out, what it cost, how long it took, and
each wallet's coins. Read-only: one short read unit of work, then the node for the coins.

    {"volume_in_sat", "deposits_confirmed",          received outputs counting for an order,
                                                      with at least one confirmation
     "volume_out_sat", "withdrawals_confirmed",       payouts (change excluded) of withdrawals
                                                      whose transaction confirmed
     "fees_paid_sat",                                 their fees (voids, CPFP children and
                                                      consolidations included)
     "average_confirmation_seconds",                  broadcast -> first confirmation seen,
                                                      over those withdrawals (null: none yet)
     "wallets": [{"wallet", "utxo_count", "confirmed_sat", "unconfirmed_sat"}]}
"""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.application.consolidation import WalletNames
from kaccy_bitcoin.application.withdrawal_builder import WithdrawalBuilder
from kaccy_bitcoin.domain.withdrawal_stats import confirmed_at, confirmed_totals, daily_series
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

DAYS = 30


class Stats:
    def __init__(self, uow: UnitOfWorkFactory, builder: WithdrawalBuilder, wallets: WalletNames) -> None:
        self._uow, self._builder, self._wallets = uow, builder, wallets

    async def __call__(self) -> dict[str, Any]:
        with self._uow.read() as uow:
            deposits, volume_in = uow.analytics.received()
            done = uow.withdrawals.in_states(["CONFIRMED", "COMPLETED"])
        totals = confirmed_totals(done)
        wallets = []
        for name in self._wallets.names():
            coins = await self._builder.of(name).owned(0)
            wallets.append({"wallet": name, "utxo_count": len(coins),
                            "confirmed_sat": sum(u.amount.value for u in coins if u.confirmations > 0),
                            "unconfirmed_sat": sum(u.amount.value for u in coins if u.confirmations <= 0)})
        return {"volume_in_sat": volume_in, "deposits_confirmed": deposits,
                "volume_out_sat": totals.volume_out, "withdrawals_confirmed": totals.count,
                "fees_paid_sat": totals.fees, "average_confirmation_seconds": totals.average_confirmation_seconds,
                "wallets": wallets}


class DailyFlows:
    """Money in and out per UTC day over the last `days` days, today included, counted as
    `stats` counts it: in, the received outputs counting for an order with a confirmation (on
    the day first seen); out, the payouts (change excluded) of confirmed withdrawals (on the
    day of their first confirmation).

        {"days": [{"day": "2026-12-08", "in_sat", "out_sat"}, ...oldest first], "in_sat", "out_sat"}
    """

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(self, days: int = DAYS) -> dict[str, Any]:
        import datetime as dt

        today = self._clock.now().astimezone(dt.timezone.utc).date()
        span = [today - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]
        since = dt.datetime.combine(span[0], dt.time(), dt.timezone.utc)
        with self._uow.read() as uow:
            incoming = uow.analytics.received_since(since)
            done = uow.withdrawals.in_states(["CONFIRMED", "COMPLETED"])
        outgoing = [(at, w.payout_total.value) for w in done if (at := confirmed_at(w)) is not None and at >= since]
        series = daily_series(span, incoming, outgoing)
        return {"days": series, "in_sat": sum(d["in_sat"] for d in series),
                "out_sat": sum(d["out_sat"] for d in series)}
