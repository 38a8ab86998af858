"""Atomic swaps in SQL (`kaccy_swaps`): Core statements, every update guarded by
`WHERE version = <as read>`."""
from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from kaccy_bitcoin.adapters.sql import core_tables as tables
from kaccy_bitcoin.adapters.sql import mapping
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.ports import storage


class SqlSwaps(storage.SwapRepository):
    """One row per swap; every update is guarded by `WHERE version = <as read>`."""

    _t = tables.swaps

    def __init__(self, conn: Connection) -> None:
        self._s = conn

    def get(self, swap_id: str) -> Any:
        row = self._s.execute(select(self._t).where(self._t.c.swap_id == swap_id)).first()
        return mapping.swap_from_row(row) if row is not None else None

    def save(self, swap: Any) -> None:
        fields, t = mapping.swap_fields(swap), self._t
        if swap.version == 0:
            try:
                with self._s.begin_nested():
                    self._s.execute(insert(t).values(swap_id=swap.swap_id, version=1, **fields))
            except IntegrityError:
                raise ConcurrentUpdate(f"swap {swap.swap_id!r} (or its key index) was stored by another process") \
                    from None
        else:
            done = self._s.execute(update(t).where(t.c.swap_id == swap.swap_id, t.c.version == swap.version)
                                   .values(version=swap.version + 1, **fields))
            if done.rowcount != 1:
                raise ConcurrentUpdate(f"swap {swap.swap_id!r} was changed by another process since it was read; "
                                       "nothing was written")
        swap.version += 1

    def all(self, state: str | None = None) -> list[Any]:
        q = select(self._t)
        if state is not None:
            q = q.where(self._t.c.state == state)
        return [mapping.swap_from_row(r) for r in self._s.execute(q.order_by(self._t.c.created_at,
                                                                             self._t.c.swap_id))]

    def watching(self) -> list[Any]:
        t = self._t
        q = select(t).where(t.c.watching.is_(True)).order_by(t.c.created_at, t.c.swap_id)
        return [mapping.swap_from_row(r) for r in self._s.execute(q)]
