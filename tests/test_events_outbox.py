"""The event outbox: events committed with the state change, read back by cursor, whatever crashed."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import delete, insert

from kaccy_bitcoin.adapters.memory.clock import SystemClock
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.adapters.sql.tables import AuditRow, SequenceRow
from kaccy_bitcoin.application.events import EventFeed, ListEvents
from kaccy_bitcoin.bootstrap import cli
from kaccy_bitcoin.domain.errors import InvalidEventRequest
from tests.conftest import STORAGE_KINDS, fresh_engine
from tests.payments_harness import CLI, Shop, kinds
from tests.test_storage_contract import T0, event

SQL_KINDS = [k for k in STORAGE_KINDS if k != "memory"]

# The CLI, with the SQL unit of work's commit patched to die by SIGKILL right after the
# real commit returns: the monitor's poll is durable, and nothing has been printed or published.
KILL_AFTER_COMMIT = """
import os, signal, sys
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWork
real_commit = SqlUnitOfWork._commit
def commit_then_die(self):
    real_commit(self)
    os.kill(os.getpid(), signal.SIGKILL)
SqlUnitOfWork._commit = commit_then_die
from kaccy_bitcoin.bootstrap.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Another process committing events one unit of work at a time: python -c WRITER URL N...
WRITER = """
import datetime as dt, sys, time
from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine
from kaccy_bitcoin.domain.events import DomainEvent
uow = SqlUnitOfWorkFactory(make_engine(sys.argv[1]))
for n in sys.argv[2:]:
    time.sleep(0.2)
    with uow() as u:
        u.record([DomainEvent(f"payment_detected:w:{n}", "payment_detected", "w", dt.datetime.now(dt.timezone.utc))])
        u.commit()
"""


@pytest.mark.node
async def test_a_monitor_killed_after_its_commit_loses_no_event(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    address = {o: shop.order(o, 50_000)["address"] for o in ("k-1", "k-2", "k-3")}
    await node.send(address["k-1"], 50_000)
    assert kinds(shop.poll()) == ["payment_detected"]
    first = shop.cli("events")[1]
    assert [(e["seq"], e["kind"], e["subject"]) for e in first["events"]] == [(1, "payment_detected", "k-1")]
    cursor = first["next"]

    await node.send(address["k-2"], 50_000)
    await node.send(address["k-3"], 20_000)   # underpaid
    await node.mine(1)
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_COMMIT, "monitor", "--once"], env=shop.env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL and killed.stdout == "", killed.stderr[-2000:]
    assert shop.poll() == []   # the restarted monitor: the killed one's poll was committed, events and all

    seen: list[dict] = []
    after = cursor
    while True:
        page = shop.cli("events", "--after", str(after), "--limit", "2")[1]
        if not page["events"]:
            assert page["next"] == after
            break
        assert len(page["events"]) <= 2 and page["next"] == page["events"][-1]["seq"]
        seen += page["events"]
        after = page["next"]
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(cursor + 1, cursor + 1 + len(seen)))      # increasing, none skipped
    assert len({e["id"] for e in seen}) == len(seen)                      # none twice
    assert shop.cli("events", "--after", str(cursor), "--limit", "1000")[1] == {"events": seen, "next": after}

    engine = make_engine(shop.env["KACCY_DATABASE_URL"])
    with SqlUnitOfWorkFactory(engine)() as uow:
        stored = uow.audit.after(cursor, 1000)
        payments = uow.payments.get_many(["k-1", "k-2", "k-3"])
    engine.dispose()
    assert [s.to_dict() for s in stored] == seen                          # every event the database holds
    by_order = {o: [e["kind"] for e in first["events"] + seen if e["subject"] == o] for o in address}
    assert {o: p.state.name for o, p in payments.items()} == {"k-1": "CONFIRMED", "k-2": "CONFIRMED",
                                                              "k-3": "CONFIRMED"}
    for order_id in address:
        assert by_order[order_id].count("payment_detected") == 1, by_order
    assert "payment_confirmed" in by_order["k-1"] and "payment_confirmed" in by_order["k-2"]
    assert "order_underpaid" in by_order["k-3"]


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_the_feed_waits_for_another_process_and_resumes_after_the_ack(kind, tmp_path) -> None:
    engine = fresh_engine(kind, tmp_path)
    url = engine.url.render_as_string(hide_password=False)
    feed = EventFeed(SqlUnitOfWorkFactory(engine), SystemClock(), first_wait=0.02, max_wait=0.2)
    got: list = []

    async def take(iterator, count: int) -> None:  # noqa: ANN001
        async for stored in iterator:
            got.append(stored)
            if len(got) == count:
                return

    waiting = feed.events(consumer="api")
    reader = asyncio.create_task(take(waiting, 3))
    await asyncio.sleep(0.1)
    assert got == [] and not reader.done()   # nothing committed yet: it waits
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, url, "1", "2", "3")
    await asyncio.wait_for(reader, 30)
    assert await writer.wait() == 0
    await waiting.aclose()
    assert [(s.seq, s.event.id) for s in got] == [(1, "payment_detected:w:1"), (2, "payment_detected:w:2"),
                                                  (3, "payment_detected:w:3")]

    assert await feed.ack("api", 2) == 2
    assert await feed.ack("api", 1) == 2                  # never backwards
    with pytest.raises(InvalidEventRequest):
        await feed.ack("api", 4)                           # no such event yet: it would skip it
    with pytest.raises(InvalidEventRequest):
        await feed.ack("", 1)
    resumed = feed.events(consumer="api")
    assert (await anext(resumed)).seq == 3                 # after the acknowledged seq
    await resumed.aclose()
    fresh = feed.events(consumer="audit")
    assert (await anext(fresh)).seq == 1                   # a new consumer starts at the beginning
    await fresh.aclose()
    engine.dispose()


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_a_database_from_before_the_outbox_numbers_on_from_its_last_event(kind, tmp_path) -> None:
    engine = fresh_engine(kind, tmp_path)
    with engine.begin() as conn:   # what the previous release left: numbered rows, no sequence
        conn.execute(insert(AuditRow.__table__), [
            {"seq": n, "event_id": event(n).id, "kind": "payment_detected", "subject": "o-1", "at": T0,
             "data": {}, "prev_hash": "0" * 64, "hash": "0" * 64} for n in (1, 2, 7)])
        conn.execute(delete(SequenceRow.__table__))
    uow = SqlUnitOfWorkFactory(engine)
    with uow() as u:
        u.record([event(8), event(2)])
        u.commit()
    with uow() as u:
        assert [(s.seq, s.event.id) for s in u.audit.after(2, 10)] == [(7, event(7).id), (8, event(8).id)]
    engine.dispose()


def test_events_pages_with_limit_and_next(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/pages.db"
    engine = make_engine(url)
    with SqlUnitOfWorkFactory(engine)() as uow:
        uow.record([event(n) for n in range(1, 6)])
        uow.commit()
    engine.dispose()
    env = {**os.environ, "KACCY_DATABASE_URL": url, "KACCY_DATA_DIR": str(tmp_path)}

    def events(*args: str) -> dict:
        proc = subprocess.run([CLI, "events", *args], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
        return json.loads(proc.stdout)

    def page(answer: dict) -> tuple[list[int], int]:
        return [e["seq"] for e in answer["events"]], answer["next"]

    assert page(events("--limit", "2")) == ([1, 2], 2)
    assert page(events("--after", "2", "--limit", "2")) == ([3, 4], 4)
    last = events("--after", "4", "--limit", "2")
    assert page(last) == ([5], 5)
    assert last["events"][0] == {"seq": 5, **event(5).to_dict()}
    assert events("--after", "5") == {"events": [], "next": 5}
    assert page(events()) == ([1, 2, 3, 4, 5], 5)


@pytest.mark.parametrize("args", [["--after", "-1"], ["--after", "x"], ["--after", "9" * 20], ["--limit", "0"],
                                  ["--limit", "1001"], ["--limit", "2.5"], ["--limit"]])
def test_events_usage_errors(args, capsys) -> None:  # noqa: ANN001
    assert cli.main(["events", *args]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "usage" and args[0] in error["message"]


async def test_list_events_refuses_what_it_cannot_take(tmp_path) -> None:
    list_events = ListEvents(SqlUnitOfWorkFactory(make_engine(f"sqlite:///{tmp_path}/l.db")))
    for after, limit in [(-1, 10), (0, 0), (0, 1001), (True, 10), (2**63, 10)]:
        with pytest.raises(InvalidEventRequest):
            await list_events(after, limit)
    assert await list_events(0, 1000) == {"events": [], "next": 0}
