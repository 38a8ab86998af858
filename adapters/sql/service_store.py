"""The service's own records (API keys, idempotency keys, webhooks) on SQLAlchemy Core, one
short transaction per method, on the engine the units of work use. The reading methods read
through `_reader` (on SQLite a deferred BEGIN: a WAL snapshot, no write lock, so they never
wait for a writer); only the writing ones take the write lock."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable, TypeVar

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from kaccy_bitcoin.adapters.sql import core_tables as tables
from kaccy_bitcoin.adapters.sql import metric_counters
from kaccy_bitcoin.adapters.sql.errors import DatabaseBusy
from kaccy_bitcoin.adapters.sql.storage import LOCK_WAIT_MS, READ_ONLY, WriteLockBusy, write_gate, writer
from kaccy_bitcoin.adapters.sql.mapping import utc
from kaccy_bitcoin.domain.api_access import ApiKey, Webhook
from kaccy_bitcoin.ports.service_store import IdempotencyKeyTaken, IdempotencyReceipt, IdempotencyRecord, ServiceStore



def _webhook(row: Any) -> Webhook:
    return Webhook(webhook_id=row.webhook_id, url=row.url, secret=row.secret,
                   events=tuple(row.events) if row.events is not None else None, key_id=row.key_id,
                   created_at=utc(row.created_at), delivered_seq=row.delivered_seq, attempts=row.attempts,
                   next_attempt_at=utc(row.next_attempt_at), last_error=row.last_error, active=row.active)


def _key(row: Any) -> ApiKey:
    return ApiKey(row.key_id, row.key_hash, tuple(row.scopes), utc(row.created_at), row.revoked)


# Built once: every idempotent request runs both.
_IDEM = tables.idempotency_keys
_CLAIM = insert(_IDEM)
_FINISH = (update(_IDEM).where(_IDEM.c.key_id == bindparam("k_key_id"), _IDEM.c.idem_key == bindparam("k_idem_key"))
           .values(status=bindparam("status"), response=bindparam("response")))

_RELEASE = _IDEM.delete().where(_IDEM.c.key_id == bindparam("k_key_id"), _IDEM.c.idem_key == bindparam("k_idem_key"),
                                _IDEM.c.status.is_(None))


T = TypeVar("T")


class SqlIdempotencyReceipt(IdempotencyReceipt):
    """The claim and the answer as statements of the use case's own transactions (on the
    store's engine): the same rows `claim_idempotency` and `finish_idempotency` write."""

    def __init__(self, engine: Engine, key_id: str, idem_key: str, request_hash: str, now: dt.datetime,
                 status: int) -> None:
        super().__init__()
        self._engine = engine
        self._key = {"k_key_id": key_id, "k_idem_key": idem_key}
        self._claim = {"key_id": key_id, "idem_key": idem_key, "request_hash": request_hash, "created_at": now}
        self._status = status

    def _connection(self, uow: Any) -> Any:
        conn = getattr(uow, "connection", None)
        if conn is None or conn.engine.url != self._engine.url:
            raise RuntimeError("an idempotency receipt is written in a unit of work of its store's database")
        return conn

    def claim(self, uow: Any) -> None:
        conn = self._connection(uow)
        try:
            conn.execute(_CLAIM, self._claim)
        except IntegrityError:   # the key's first use: the transaction is rolled back by the caller
            raise IdempotencyKeyTaken(self._claim["idem_key"]) from None
        uow.after_commit(self._claimed)

    def answer(self, uow: Any, body: Any) -> None:
        self._connection(uow).execute(_FINISH, {**self._key, "status": self._status, "response": body})
        uow.after_commit(self._answered)

    def _claimed(self) -> None:
        self.claimed = True

    def _answered(self) -> None:
        self.answered = True


class SqlServiceStore(ServiceStore):
    def __init__(self, engine: Engine, abandoned_after: dt.timedelta = dt.timedelta(minutes=10)) -> None:
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})   # SQLite: BEGIN, no write lock
        # A claim still unanswered this long after it was made belongs to a process that died
        # mid-request: the next request with the key takes it over and runs again.
        self._abandoned_after = abandoned_after
        # PostgreSQL: a write of one statement runs in autocommit, one round trip instead of
        # three (BEGIN, the statement, COMMIT); a statement is atomic on its own. SQLite keeps
        # BEGIN IMMEDIATE: its write lock is taken through the write gate (`writer`).
        self._autocommit = (engine.execution_options(isolation_level="AUTOCOMMIT")
                            if engine.dialect.name == "postgresql" else None)

    async def run_writing(self, method: Callable[..., T], *args: Any) -> T:
        # After this process's earlier writers (units of work included), in a thread.
        return await write_gate(self._engine).run(method, *args)

    def add_key(self, key: ApiKey) -> None:
        with writer(self._engine).begin() as c:
            c.execute(insert(tables.api_keys).values(key_id=key.key_id, key_hash=key.key_hash,
                                                     scopes=list(key.scopes), created_at=key.created_at,
                                                     revoked=key.revoked))

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        t = tables.api_keys
        with self._reader.connect() as c:
            row = c.execute(select(t).where(t.c.key_hash == key_hash)).first()
        return _key(row) if row is not None else None

    def keys(self) -> list[ApiKey]:
        t = tables.api_keys
        with self._reader.connect() as c:
            return [_key(r) for r in c.execute(select(t).order_by(t.c.created_at, t.c.key_id))]

    def revoke_key(self, key_id: str) -> bool:
        t = tables.api_keys
        with writer(self._engine).begin() as c:
            return c.execute(update(t).where(t.c.key_id == key_id).values(revoked=True)).rowcount == 1

    def _write_one(self, statement: Any, params: dict[str, Any]) -> None:
        """One write statement as a transaction of its own."""
        if self._autocommit is not None:
            with self._autocommit.connect() as c:
                c.execute(statement, params)
            return
        with writer(self._engine).begin() as c:
            c.execute(statement, params)

    def claim_idempotency(self, key_id: str, idem_key: str, request_hash: str,
                          now: dt.datetime) -> IdempotencyRecord | None:
        t = tables.idempotency_keys
        try:
            self._write_one(_CLAIM, {"key_id": key_id, "idem_key": idem_key, "request_hash": request_hash,
                                     "created_at": now})
            return None
        except IntegrityError:
            pass
        with writer(self._engine).begin() as c:
            row = c.execute(select(t).where(t.c.key_id == key_id, t.c.idem_key == idem_key)).first()
            if row is None:   # released between the two statements: the caller may try again
                return IdempotencyRecord(request_hash, None, None)
            if row.status is None and utc(row.created_at) < now - self._abandoned_after:
                taken = c.execute(update(t).where(t.c.key_id == key_id, t.c.idem_key == idem_key,
                                                  t.c.status.is_(None), t.c.created_at == row.created_at)
                                  .values(request_hash=request_hash, created_at=now))
                if taken.rowcount == 1:
                    return None
        return IdempotencyRecord(row.request_hash, row.status, row.response)

    def receipt(self, key_id: str, idem_key: str, request_hash: str, now: dt.datetime,
                status: int) -> IdempotencyReceipt | None:
        return SqlIdempotencyReceipt(self._engine, key_id, idem_key, request_hash, now, status)

    def finish_idempotency(self, key_id: str, idem_key: str, status: int, response: Any) -> None:
        self._write_one(_FINISH, {"k_key_id": key_id, "k_idem_key": idem_key, "status": status, "response": response})

    def release_idempotency(self, key_id: str, idem_key: str) -> None:
        self._write_one(_RELEASE, {"k_key_id": key_id, "k_idem_key": idem_key})

    def add_webhook(self, webhook: Webhook) -> None:
        with writer(self._engine).begin() as c:
            c.execute(insert(tables.webhooks).values(
                webhook_id=webhook.webhook_id, url=webhook.url, secret=webhook.secret,
                events=list(webhook.events) if webhook.events is not None else None, key_id=webhook.key_id,
                created_at=webhook.created_at, delivered_seq=webhook.delivered_seq, attempts=webhook.attempts,
                next_attempt_at=webhook.next_attempt_at, last_error=webhook.last_error, active=webhook.active))

    def webhooks(self) -> list[Webhook]:
        t = tables.webhooks
        with self._reader.connect() as c:
            rows = c.execute(select(t).where(t.c.active.is_(True)).order_by(t.c.created_at, t.c.webhook_id))
            return [_webhook(r) for r in rows]

    def webhook(self, webhook_id: str) -> Webhook | None:
        t = tables.webhooks
        with self._reader.connect() as c:
            row = c.execute(select(t).where(t.c.webhook_id == webhook_id)).first()
        return _webhook(row) if row is not None else None

    def save_webhook_progress(self, webhook: Webhook, expected_seq: int) -> bool:
        t = tables.webhooks
        with writer(self._engine).begin() as c:
            done = c.execute(update(t).where(t.c.webhook_id == webhook.webhook_id,
                                             t.c.delivered_seq == expected_seq)
                             .values(delivered_seq=webhook.delivered_seq, attempts=webhook.attempts,
                                     next_attempt_at=webhook.next_attempt_at,
                                     last_error=(webhook.last_error or None) and webhook.last_error[:500]))
            return done.rowcount == 1

    def deactivate_webhook(self, webhook_id: str) -> bool:
        t = tables.webhooks
        with writer(self._engine).begin() as c:
            return c.execute(update(t).where(t.c.webhook_id == webhook_id).values(active=False)).rowcount == 1

    def stats(self) -> dict[str, Any]:
        """The counters the triggers keep (adapters/sql/metric_counters.py) and the outbox's
        head: two indexed reads, whatever the tables hold, without waiting for a writer."""
        a = tables.audit_log
        with self._reader.connect() as c:
            counters = metric_counters.read(c)
            last_seq = c.execute(select(func.max(a.c.seq))).scalar()
        payments = {k.split(":", 1)[1].lower(): v for k, v in counters.items() if k.startswith("payments:")}
        withdrawals = {k.split(":", 1)[1].lower(): v for k, v in counters.items() if k.startswith("withdrawals:")}
        return {"payments": payments, "received_sat": counters.get("received_sat", 0),
                "withdrawals": withdrawals, "last_seq": int(last_seq or 0)}

    def check_writable(self, wait_seconds: float) -> None:
        s = tables.sequences
        wait_ms = max(1, int(wait_seconds * 1000))
        try:
            # SQLite: BEGIN IMMEDIATE takes the write lock, waiting at most wait_ms for it.
            with self._engine.execution_options(**{LOCK_WAIT_MS: wait_ms}).begin() as c:
                if c.dialect.name == "postgresql":
                    c.execute(text(f"SET LOCAL lock_timeout = {wait_ms}"))
                c.execute(update(s).where(s.c.name == "__ready_probe__").values(value=s.c.value))
        except (OperationalError, WriteLockBusy) as exc:
            if isinstance(exc, OperationalError) and not _busy(exc):
                raise
            raise DatabaseBusy(f"the database is busy: another writer has held its write lock for over "
                               f"{wait_seconds:g} s") from None


def _busy(exc: OperationalError) -> bool:
    """SQLite's "database is locked" (busy timeout) or PostgreSQL's lock_not_available (55P03)."""
    return "database is locked" in str(exc.orig) or getattr(exc.orig, "sqlstate", None) == "55P03"
