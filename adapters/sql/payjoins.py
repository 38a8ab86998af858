"""PayJoin receiving sessions in SQL (`kaccy_payjoins`, `kaccy_payjoin_inputs`): Core statements,
every update guarded by `WHERE version = <as read>`."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from kaccy_bitcoin.adapters.sql import core_tables as tables
from kaccy_bitcoin.adapters.sql.mapping import utc
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.domain.payjoin_session import PayjoinMachine, PayjoinSession, PayjoinState
from kaccy_bitcoin.domain.statemachine import Transition
from kaccy_bitcoin.ports import storage


def _fields(s: PayjoinSession) -> dict[str, Any]:
    data = {"original": s.original, "original_txid": s.original_txid.value if s.original_txid else None,
            "proposal": s.proposal, "coin": str(s.coin) if s.coin else None, "coin_sat": s.coin_sat,
            "contributed_sat": s.contributed_sat, "customer_sat": s.customer_sat,
            "proposed_at": s.proposed_at.isoformat() if s.proposed_at else None,
            "history": [t.to_dict() for t in s.machine.history]}
    return {"order_id": s.order_id, "state": s.state.name, "released": s.released,
            "proposal_txid": s.proposal_txid.value if s.proposal_txid else None, "data": data,
            "created_at": s.created_at}


def _from_row(row: Any) -> PayjoinSession:
    import datetime as dt

    d = row.data
    machine = PayjoinMachine(PayjoinState[row.state], [Transition.from_dict(t) for t in d["history"]])
    return PayjoinSession(
        row.token, row.order_id, utc(row.created_at), machine, d["original"],
        Txid(d["original_txid"]) if d["original_txid"] else None, d["proposal"],
        Txid(row.proposal_txid) if row.proposal_txid else None, OutPoint.parse(d["coin"]) if d["coin"] else None,
        d["coin_sat"], d["contributed_sat"], d["customer_sat"],
        dt.datetime.fromisoformat(d["proposed_at"]) if d["proposed_at"] else None, row.released, row.version)


class SqlPayjoins(storage.PayjoinRepository):
    _t = tables.payjoins
    _inputs = tables.payjoin_inputs

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def add(self, session: PayjoinSession) -> None:
        try:
            with self._s.begin_nested():
                self._s.execute(insert(self._t).values(token=session.token, version=1, **_fields(session)))
        except IntegrityError:
            raise ConcurrentUpdate(f"order {session.order_id!r} has a payjoin session already") from None
        session.version = 1

    def save(self, session: PayjoinSession) -> None:
        t = self._t
        done = self._s.execute(update(t).where(t.c.token == session.token, t.c.version == session.version)
                               .values(version=session.version + 1, **_fields(session)))
        if done.rowcount != 1:
            raise ConcurrentUpdate(f"the payjoin session of order {session.order_id!r} was changed by another "
                                   "process since it was read; nothing was written")
        session.version += 1

    def get(self, token: str) -> PayjoinSession | None:
        row = self._s.execute(select(self._t).where(self._t.c.token == token)).first()
        return _from_row(row) if row is not None else None

    def for_orders(self, order_ids: Iterable[str]) -> dict[str, PayjoinSession]:
        ids = list(set(order_ids))
        if not ids:
            return {}
        rows = self._s.execute(select(self._t).where(self._t.c.order_id.in_(ids)))
        return {r.order_id: _from_row(r) for r in rows}

    def by_proposal_txids(self, txids: Iterable[Txid]) -> dict[Txid, PayjoinSession]:
        values = sorted({t.value for t in txids})
        if not values:
            return {}
        rows = self._s.execute(select(self._t).where(self._t.c.proposal_txid.in_(values)))
        return {Txid(r.proposal_txid): _from_row(r) for r in rows}

    def open(self) -> list[PayjoinSession]:
        t = self._t
        rows = self._s.execute(select(t).where(t.c.released.is_(False), t.c.state != PayjoinState.OFFERED.name)
                               .order_by(t.c.created_at, t.c.token))
        return [_from_row(r) for r in rows]

    def seen_inputs(self, outpoints: Iterable[OutPoint]) -> set[OutPoint]:
        ops = list(set(outpoints))
        if not ops:
            return set()
        i = self._inputs
        rows = self._s.execute(select(i.c.txid, i.c.vout).where(
            or_(*[and_(i.c.txid == op.txid.value, i.c.vout == op.vout) for op in ops])))
        return {OutPoint(Txid(r.txid), r.vout) for r in rows}

    def record_inputs(self, outpoints: Sequence[OutPoint], token: str) -> None:
        if not outpoints:
            return
        try:
            with self._s.begin_nested():
                self._s.execute(insert(self._inputs), [{"txid": op.txid.value, "vout": op.vout, "token": token}
                                                       for op in outpoints])
        except IntegrityError:
            raise ConcurrentUpdate("an input of this original was offered to another payjoin meanwhile") from None
