"""Lightning payouts in SQL (`kaccy_ln_payouts`): Core statements, every update guarded by
`WHERE version = <as read>`."""
from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from kaccy_bitcoin.adapters.sql import core_tables as tables
from kaccy_bitcoin.adapters.sql.mapping import utc
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.domain.lightning_payout_state import LightningPayoutMachine
from kaccy_bitcoin.domain.lightning_payouts import LightningPayout
from kaccy_bitcoin.domain.money import MilliSatoshis
from kaccy_bitcoin.domain.risk import RiskAssessment
from kaccy_bitcoin.domain.statemachine import Transition
from kaccy_bitcoin.ports import storage


def payout_fields(p: LightningPayout) -> dict:
    return {"payment_hash": p.payment_hash, "payment_request": p.payment_request, "destination": p.destination,
            "amount_msat": p.amount.value, "max_fee_msat": p.max_fee.value,
            "fee_msat": p.fee.value if p.fee is not None else None, "state": p.state.name,
            "history": [t.to_dict() for t in p.machine.history], "user_id": p.user, "risk": p.risk.to_dict(),
            "approved_by": p.approved_by, "failure_reason": p.failure_reason, "created_at": p.created_at}


def payout_from_row(row: Any) -> LightningPayout:
    machine = LightningPayoutMachine(LightningPayoutMachine.States[row.state],
                                     [Transition.from_dict(t) for t in row.history])
    return LightningPayout(
        payment_id=row.payment_id, payment_request=row.payment_request, payment_hash=row.payment_hash,
        destination=row.destination, amount=MilliSatoshis(row.amount_msat), max_fee=MilliSatoshis(row.max_fee_msat),
        created_at=utc(row.created_at), machine=machine, user=row.user_id, risk=RiskAssessment.from_dict(row.risk),
        approved_by=row.approved_by, fee=MilliSatoshis(row.fee_msat) if row.fee_msat is not None else None,
        failure_reason=row.failure_reason, version=row.version)


class SqlLightningPayouts(storage.LightningPayoutRepository):
    _t = tables.ln_payouts

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def add(self, payout: LightningPayout) -> None:
        try:
            with self._s.begin_nested():
                self._s.execute(insert(self._t).values(payment_id=payout.payment_id, version=1,
                                                       **payout_fields(payout)))
        except IntegrityError:
            raise ConcurrentUpdate(f"Lightning payment {payout.payment_id} exists already") from None
        payout.version = 1

    def save(self, payout: LightningPayout) -> None:
        t = self._t
        done = self._s.execute(update(t).where(t.c.payment_id == payout.payment_id, t.c.version == payout.version)
                               .values(version=payout.version + 1, **payout_fields(payout)))
        if done.rowcount != 1:
            raise ConcurrentUpdate(f"Lightning payment {payout.payment_id} was changed by another process since "
                                   "it was read; nothing was written")
        payout.version += 1

    def get(self, payment_id: str) -> LightningPayout | None:
        row = self._s.execute(select(self._t).where(self._t.c.payment_id == payment_id)).first()
        return payout_from_row(row) if row is not None else None

    def for_hash(self, payment_hash: str) -> list[LightningPayout]:
        t = self._t
        rows = self._s.execute(select(t).where(t.c.payment_hash == payment_hash).order_by(t.c.created_at,
                                                                                          t.c.payment_id))
        return [payout_from_row(r) for r in rows]
