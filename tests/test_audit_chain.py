"""The hash-chained audit trail: every entry linked to the one before by SHA-256, checked by
`kaccy-bitcoin audit verify` as its own process; an entry edited, removed or reordered directly
in the database is found (SQLite and PostgreSQL); a database of revision 0002 is chained by
its migration."""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import delete, insert, select, text, update

from kaccy_bitcoin.adapters.sql import core_tables, migrations
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.domain import audit
from kaccy_bitcoin.domain.events import DomainEvent
from tests.conftest import empty_kaccy_tables, fresh_engine

CLI = str(pathlib.Path(sys.executable).parent / "kaccy-bitcoin")
KINDS = ["sqlite"] + (["postgresql"] if os.environ.get("KACCY_TEST_DATABASE_URL") else [])
T0 = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
LOG = core_tables.audit_log


def event(n: int, actor: str = "system") -> DomainEvent:
    return DomainEvent(f"e-{n}", "limits_set" if n % 2 else "payment_detected", f"s-{n % 3}",
                       T0 + dt.timedelta(seconds=n), {"n": n, "text": "naïve ☃"}, actor)


def url_of(kind: str, tmp_path: pathlib.Path) -> str:
    return f"sqlite:///{tmp_path}/audit.db" if kind == "sqlite" else os.environ["KACCY_TEST_DATABASE_URL"]


def cli(url: str, tmp_path: pathlib.Path, *args: str) -> tuple[int, dict]:
    env = {**os.environ, "KACCY_DATABASE_URL": url, "KACCY_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(params=KINDS)
def logged(request: pytest.FixtureRequest, tmp_path: pathlib.Path):  # noqa: ANN201
    """A database holding six chained entries (written in three commits), and its URL."""
    engine = fresh_engine(request.param, tmp_path)
    uow = SqlUnitOfWorkFactory(engine)
    for batch in ([1, 2], [3], [4, 5, 6]):
        with uow() as u:
            u.record([event(n, actor="alice" if n == 3 else "system") for n in batch])
            u.commit()
    yield engine, engine.url.render_as_string(hide_password=False)
    engine.dispose()


def test_an_intact_chain_verifies_and_answers_queries(logged, tmp_path) -> None:  # noqa: ANN001
    engine, url = logged
    rc, out = cli(url, tmp_path, "audit", "verify")
    with engine.connect() as conn:
        rows = conn.execute(select(LOG).order_by(LOG.c.seq)).all()
    assert (rc, out) == (0, {"ok": True, "entries": 6, "head": rows[-1].hash})
    assert rows[0].prev_hash == audit.GENESIS and all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
    assert rows[2].actor == "alice"
    assert rows[0].hash == audit.entry_hash(audit.GENESIS, 1, "e-1", "limits_set", "s-1", "system", T0
                                            + dt.timedelta(seconds=1), {"n": 1, "text": "naïve ☃"})
    rc, found = cli(url, tmp_path, "audit", "query", "--subject", "s-0")
    assert rc == 0 and [(e["seq"], e["id"], e["subject"]) for e in found["entries"]] == [(3, "e-3", "s-0"),
                                                                                       (6, "e-6", "s-0")]
    assert set(found["entries"][0]) == {"seq", "id", "kind", "subject", "actor", "at", "data", "prev_hash", "hash"}
    assert found["entries"][0]["actor"] == "alice"
    rc, found = cli(url, tmp_path, "audit", "query", "--since", (T0 + dt.timedelta(seconds=5)).isoformat())
    assert [e["seq"] for e in found["entries"]] == [5, 6]
    rc, found = cli(url, tmp_path, "audit", "query", "--since", "yesterday")
    assert rc == 2 and found["error"]["code"] == "usage"


def _tamper(engine, how: str) -> None:  # noqa: ANN001
    with engine.begin() as conn:
        if how == "edit":
            conn.execute(update(LOG).where(LOG.c.seq == 3).values(data={"n": 3, "text": "other"}))
        elif how == "edit_actor":
            conn.execute(update(LOG).where(LOG.c.seq == 3).values(actor="mallory"))
        elif how == "delete":
            conn.execute(delete(LOG).where(LOG.c.seq == 3))
        elif how == "delete_last":
            conn.execute(delete(LOG).where(LOG.c.seq == 6))
        elif how == "swap":   # entries 3 and 4 exchange places (their contents trade seq numbers)
            conn.execute(update(LOG).where(LOG.c.seq == 3).values(seq=-3))
            conn.execute(update(LOG).where(LOG.c.seq == 4).values(seq=3))
            conn.execute(update(LOG).where(LOG.c.seq == -3).values(seq=4))
        elif how == "rehash":   # edited and its own hash recomputed: the next link breaks
            row = conn.execute(select(LOG).where(LOG.c.seq == 3)).one()
            data = {"n": 3, "text": "other"}
            digest = audit.entry_hash(row.prev_hash, 3, row.event_id, row.kind, row.subject, row.actor, row.at, data)
            conn.execute(update(LOG).where(LOG.c.seq == 3).values(data=data, hash=digest))


@pytest.mark.parametrize(("how", "first_bad"), [("edit", 3), ("edit_actor", 3), ("delete", 3), ("delete_last", 6),
                                                ("swap", 3), ("rehash", 4)])
def test_tampering_is_found_at_the_first_bad_entry(logged, tmp_path, how: str, first_bad: int) -> None:  # noqa: ANN001
    engine, url = logged
    _tamper(engine, how)
    rc, out = cli(url, tmp_path, "audit", "verify")
    assert rc == 1 and out["ok"] is False and out["first_bad"] == first_bad, out
    assert out["entries"] == first_bad - 1


def test_appends_chain_on_across_processes_and_a_migrated_0002_database(tmp_path) -> None:  # noqa: ANN001
    for kind in KINDS:
        url = url_of(kind, tmp_path / kind) if kind == "sqlite" else url_of(kind, tmp_path)
        (tmp_path / kind).mkdir(exist_ok=True)
        if kind == "postgresql":
            empty_kaccy_tables(make_engine(url, check_schema=False))
        engine = make_engine(url, check_schema=False)
        with engine.begin() as conn:
            command.upgrade(migrations.config(conn), "0002")
            conn.execute(text("INSERT INTO kaccy_audit_log (seq, event_id, kind, subject, at, data) VALUES "
                              "(1, 'old-1', 'payment_detected', 'o-1', :at, :data), "
                              "(2, 'old-2', 'order_paid', 'o-1', :at, :data)"),
                         {"at": T0, "data": json.dumps({"amount_sat": 5})})
        engine.dispose()
        assert cli(url, tmp_path, "audit", "verify")[1]["error"]["code"] == "database_outdated"
        assert cli(url, tmp_path, "db", "upgrade")[0] == 0
        rc, out = cli(url, tmp_path, "audit", "verify")
        assert (rc, out["ok"], out["entries"]) == (0, True, 2)
        # operator actions append after them, each process chaining on the last entry
        procs = [subprocess.Popen([CLI, "limits", "set", "--user", f"u{n}", "--daily-sat", "1000", "--by", "ops"],
                                  env={**os.environ, "KACCY_DATABASE_URL": url, "KACCY_DATA_DIR": str(tmp_path)},
                                  stdout=subprocess.PIPE, text=True) for n in range(6)]
        assert all(p.wait(timeout=60) == 0 for p in procs)
        for p in procs:
            p.stdout.close()
        rc, out = cli(url, tmp_path, "audit", "verify")
        assert (rc, out["ok"], out["entries"]) == (0, True, 8)
        rc, found = cli(url, tmp_path, "audit", "query", "--subject", "u3")
        assert [(e["kind"], e["actor"], e["data"]["daily_sat"]) for e in found["entries"]] == [("limits_set", "ops",
                                                                                                 1000)]
