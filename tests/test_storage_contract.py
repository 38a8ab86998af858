"""One contract for every storage adapter: memory, SQLite, and PostgreSQL when configured."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import text

from kaccy_bitcoin.domain.addresses import AddressEntry, MonitorCursor
from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import CoinsReserved, OrderConflict
from kaccy_bitcoin.domain.events import DomainEvent, StoredEvent
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import OutputObservation, OutputStatus, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds
from kaccy_bitcoin.ports.storage import StoredOutput
from kaccy_bitcoin.domain.withdrawals import Withdrawal, WithdrawalInput, WithdrawalOutput

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)


def request(order_id: str = "o-1", address: str = "bcrt1qaddr1", amount: int = 10_000, **kw) -> PaymentRequest:
    return PaymentRequest(order_id, address, Satoshis(amount), T0, **kw)


def op(n: int, vout: int = 0) -> OutPoint:
    return OutPoint(Txid(f"{n:064x}"), vout)


def test_order_round_trip_and_lookup_by_address(uow_factory) -> None:
    r = request(expires_at=T0 + dt.timedelta(hours=1), label="coffee", derivation_index=7,
                tolerance=Satoshis(5))
    with uow_factory() as uow:
        uow.requests.add(r)
        uow.commit()
    with uow_factory() as uow:
        assert uow.requests.get("o-1") == r
        assert uow.requests.by_addresses(["bcrt1qaddr1", "nope"]) == {"bcrt1qaddr1": r}
        assert uow.requests.get("missing") is None


def test_duplicate_order_or_address_is_refused(uow_factory) -> None:
    with uow_factory() as uow:
        uow.requests.add(request())
        uow.commit()
    with uow_factory() as uow:
        with pytest.raises(OrderConflict):
            uow.requests.add(request())
    with uow_factory() as uow:
        with pytest.raises(OrderConflict):
            uow.requests.add(request("o-2"))


def test_uncommitted_work_is_rolled_back(uow_factory) -> None:
    with uow_factory() as uow:
        uow.requests.add(request())
        uow.addresses.allocate(0)
        uow.cursors.set("payments", MonitorCursor("ab" * 32))
    with uow_factory() as uow:
        assert uow.requests.get("o-1") is None
        assert uow.addresses.issued(0) == 0
        assert uow.cursors.get("payments") is None


def test_a_failure_mid_work_leaves_no_half_state(uow_factory) -> None:
    with pytest.raises(RuntimeError):
        with uow_factory() as uow:
            uow.requests.add(request())
            uow.cursors.set("payments", MonitorCursor("cd" * 32))
            raise RuntimeError("crash between two writes")
    with uow_factory() as uow:
        assert uow.requests.get("o-1") is None and uow.cursors.get("payments") is None


def test_payment_round_trip_with_outputs_history_and_flags(uow_factory) -> None:
    r = request(amount=30_000)
    p = Payment("o-1")
    p.observe(r, OutputObservation(op(1), Satoshis(10_000), 2, "aa" * 32), T0)
    p.observe(r, OutputObservation(op(2, 1), Satoshis(25_000), 0), T0)
    p.settle(r, ConfirmationThresholds(), T0)
    p.withdraw(r, op(2, 1), OutputStatus.REPLACED, T0, replaced_by=Txid("ee" * 32))
    p.settle(r, ConfirmationThresholds(), T0)
    with uow_factory() as uow:
        uow.requests.add(r)
        uow.payments.save([p])
        uow.commit()
    with uow_factory() as uow:
        loaded = uow.payments.get("o-1")
    assert loaded.outputs == p.outputs
    assert loaded.state == p.state and loaded.history == p.history
    assert loaded.event_seq == p.event_seq and loaded.reported_match == p.reported_match
    assert loaded.received == Satoshis(10_000)


def test_payment_queries(uow_factory) -> None:
    r1, r2 = request("a", "addr-a"), request("b", "addr-b", expires_at=T0 + dt.timedelta(minutes=5))
    p1 = Payment("a")
    p1.observe(r1, OutputObservation(op(5), Satoshis(10_000), 1), T0)
    p1.settle(r1, ConfirmationThresholds(), T0)
    with uow_factory() as uow:
        uow.requests.add(r1)
        uow.requests.add(r2)
        uow.payments.save([p1, Payment("b")])
        uow.commit()
    with uow_factory() as uow:
        assert uow.payments.unsettled_outputs() == {op(5): StoredOutput("a", 1, OutputStatus.ACTIVE, None)}
        assert set(uow.payments.get_many(["a", "b", "zz"])) == {"a", "b"}
        assert uow.payments.by_outpoints([op(5), op(6)]) == {
            op(5): StoredOutput("a", 1, OutputStatus.ACTIVE, None)}
        assert uow.requests.expiring(T0) == []
        assert [r.order_id for r in uow.requests.expiring(T0 + dt.timedelta(minutes=5))] == ["b"]


def test_address_indexes_are_never_reused(uow_factory) -> None:
    with uow_factory() as uow:
        assert [uow.addresses.allocate(0) for _ in range(3)] == [0, 1, 2]
        assert uow.addresses.allocate(1) == 0
        uow.commit()
    with uow_factory() as uow:
        uow.addresses.allocate(0)  # rolled back: handed out to nobody
    with uow_factory() as uow:
        assert uow.addresses.allocate(0) == 3
        assert uow.addresses.issued(0) == 4 and uow.addresses.issued(1) == 1
        uow.commit()


def test_address_book_labels_usage_and_export(uow_factory) -> None:
    with uow_factory() as uow:
        uow.addresses.record(AddressEntry("addr-2", 0, 2, "", "o-2"))
        uow.addresses.record(AddressEntry("addr-1", 0, 1, "tea", "o-1"))
        uow.addresses.record(AddressEntry("chg-0", 1, 0, "", None, "change"))
        uow.commit()
    with uow_factory() as uow:
        uow.addresses.mark_used(["addr-1", "unknown"])
        uow.commit()
    with uow_factory() as uow:
        entries = uow.addresses.entries()
        assert [e.address for e in entries] == ["addr-1", "addr-2", "chg-0"]
        assert uow.addresses.get("addr-1").used and not uow.addresses.get("addr-2").used
        assert uow.addresses.unused_count(0) == 1
        assert entries[0].bip329() == '{"type":"addr","ref":"addr-1","label":"tea"}'
        assert entries[1].bip329() == '{"type":"addr","ref":"addr-2","label":"order o-2"}'


def test_cursor_replace(uow_factory) -> None:
    with uow_factory() as uow:
        uow.cursors.set("payments", MonitorCursor("aa" * 32, 10))
        uow.commit()
    with uow_factory() as uow:
        uow.cursors.set("payments", MonitorCursor("bb" * 32, 11))
        uow.commit()
    with uow_factory() as uow:
        assert uow.cursors.get("payments") == MonitorCursor("bb" * 32, 11)


def test_audit_log_deduplicates_and_commits_with_the_work(uow_factory) -> None:
    e1 = DomainEvent("payment_detected:o-1:1", "payment_detected", "o-1", T0, {"amount_sat": 5})
    e2 = DomainEvent("order_underpaid:o-1:2", "order_underpaid", "o-1", T0, {})
    with uow_factory() as uow:
        uow.record([e1, e2, e1])
        uow.commit()
    assert [e.id for e in uow.committed_events()] == [e1.id, e2.id]
    with uow_factory() as uow:
        uow.record([e1])
        uow.commit()
    assert uow.committed_events() == []
    with uow_factory() as uow:
        uow.record([DomainEvent("payment_late:x:1", "payment_late", "x", T0, {})])
    with uow_factory() as uow:
        assert [e.id for e in uow.audit.events()] == [e1.id, e2.id]
        assert uow.audit.events("o-1")[0] == e1


def test_withdrawal_round_trip(uow_factory) -> None:
    w = Withdrawal("w-1", T0, [WithdrawalInput(op(9), Satoshis(100_000))],
                   [WithdrawalOutput("bcrt1qdest", Satoshis(60_000)),
                    WithdrawalOutput("bcrt1qchange", Satoshis(39_000), change=True)],
                   Satoshis(1_000), "cHNidP8B")
    w.record_signatures("cHNidP8C", complete=True, at=T0, signer="software")
    with uow_factory() as uow:
        uow.withdrawals.save(w)
        uow.commit()
    with uow_factory() as uow:
        loaded = uow.withdrawals.get("w-1")
        assert loaded.inputs == w.inputs and loaded.outputs == w.outputs and loaded.fee == w.fee
        assert loaded.state == w.state and loaded.machine.history == w.machine.history
        assert [x.withdrawal_id for x in uow.withdrawals.in_states(["signed"])] == ["w-1"]
        assert uow.withdrawals.in_states(["created"]) == []


def test_an_order_rolled_back_is_never_seen_again(uow_factory) -> None:
    with uow_factory() as uow:
        uow.requests.add(request("ghost", "addr-ghost"))
        assert uow.requests.get("ghost") is not None          # visible inside its own work
        assert set(uow.requests.get_many(["ghost"])) == {"ghost"}
    with uow_factory() as uow:                                 # rolled back: gone, cache included
        assert uow.requests.get("ghost") is None and uow.requests.get_many(["ghost"]) == {}


def test_coin_reservations_have_one_holder(uow_factory) -> None:
    with uow_factory() as uow:
        uow.reservations.reserve([op(1), op(2)], "w-1", T0)
        uow.commit()
    with uow_factory() as uow:
        with pytest.raises(CoinsReserved):
            uow.reservations.reserve([op(3), op(2)], "w-2", T0)
        uow.reservations.reserve([op(1)], "w-1", T0)          # the holder again: fine
        assert uow.reservations.reserved() == {op(1): "w-1", op(2): "w-1"}
    with uow_factory() as uow:
        uow.reservations.release("w-1")
        uow.reservations.reserve([op(2), op(3)], "w-2", T0)
        uow.commit()
    with uow_factory() as uow:
        assert uow.reservations.reserved() == {op(2): "w-2", op(3): "w-2"}


def event(n: int, subject: str = "o-1") -> DomainEvent:
    return DomainEvent(f"payment_detected:{subject}:{n}", "payment_detected", subject, T0, {"n": n})


def test_outbox_numbers_events_in_commit_order_without_gaps(uow_factory) -> None:
    with uow_factory() as uow:
        assert uow.audit.after(0, 10) == [] and uow.audit.last_seq() == 0
        uow.record([event(1), event(2)])
        uow.commit()
    with uow_factory() as uow:
        uow.record([event(99)])            # rolled back: takes no number
    with uow_factory() as uow:
        uow.record([event(2), event(3)])   # event 2 is already stored: not numbered again
        uow.commit()
    assert uow.committed_events() == [event(3)]
    with uow_factory() as uow:
        stored = uow.audit.after(0, 10)
        assert stored == [StoredEvent(1, event(1)), StoredEvent(2, event(2)), StoredEvent(3, event(3))]
        assert stored[0].to_dict() == {"seq": 1, **event(1).to_dict()}
        assert uow.audit.after(1, 1) == [StoredEvent(2, event(2))]
        assert uow.audit.after(3, 10) == [] and uow.audit.after(2**63 - 1, 10) == []
        assert uow.audit.last_seq() == 3


def test_consumer_acknowledgements_never_move_backwards(uow_factory) -> None:
    with uow_factory() as uow:
        assert uow.consumers.acknowledged("api") == 0
        assert uow.consumers.acknowledge("api", 5, T0) == 5
        uow.commit()
    with uow_factory() as uow:
        assert uow.consumers.acknowledge("api", 3, T0) == 5
        assert uow.consumers.acknowledge("webhooks", 2, T0) == 2
        uow.commit()
    with uow_factory() as uow:
        uow.consumers.acknowledge("api", 9, T0)   # rolled back
    with uow_factory() as uow:
        assert (uow.consumers.acknowledged("api"), uow.consumers.acknowledged("webhooks")) == (5, 2)


def _read_committed(uow_factory, after: int) -> list[StoredEvent]:  # noqa: ANN001
    """What a consumer sees now (read-only: on SQLite it does not wait for the writer)."""
    with uow_factory.read() as uow:
        return uow.audit.after(after, 100)


def _wait_until_blocked(uow_factory, thread: threading.Thread) -> None:  # noqa: ANN001
    """Return once `thread` waits for a lock (PostgreSQL says so), or after half a second."""
    engine = getattr(uow_factory, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        thread.join(0.5)
        return
    deadline = time.monotonic() + 20
    with engine.connect() as conn:
        while thread.is_alive() and time.monotonic() < deadline:
            waiting = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND wait_event_type = 'Lock'")).scalar_one()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.02)


def test_a_writer_with_a_later_seq_never_commits_before_the_earlier_one(uow_factory) -> None:
    """A consumer that saw seq N+1 must never find N appear later: the holder of N+1 waits."""
    with uow_factory() as uow:
        uow.record([event(1)])
        uow.commit()
    first = uow_factory()
    with first:
        first.requests.add(request())
        first.audit.append([event(2)])     # seq 2 is taken; this transaction is still open
        done: list[object] = []

        def second_writer() -> None:
            try:
                with uow_factory() as uow:
                    uow.record([event(3)])
                    uow.commit()
                done.append("committed")
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                done.append(exc)

        thread = threading.Thread(target=second_writer)
        thread.start()
        _wait_until_blocked(uow_factory, thread)
        assert thread.is_alive() and done == [], done      # it waits for the holder of seq 2
        assert _read_committed(uow_factory, 1) == []       # a consumer at 1 sees nothing yet
        first.commit()
    thread.join(30)
    assert done == ["committed"]
    assert [(s.seq, s.event.id) for s in _read_committed(uow_factory, 0)] == [
        (1, event(1).id), (2, event(2).id), (3, event(3).id)]


def test_order_search_filters_by_state_and_label_and_pages_by_id(uow_factory) -> None:
    orders = [request(f"s-{n}", f"addr-s{n}", label="even" if n % 2 == 0 else "odd") for n in range(5)]
    paid = Payment("s-2")
    paid.observe(orders[2], OutputObservation(op(9), Satoshis(10_000), 1), T0)
    paid.settle(orders[2], ConfirmationThresholds(), T0)
    with uow_factory() as uow:
        for r in orders:
            uow.requests.add(r)
            uow.payments.save([paid if r.order_id == "s-2" else Payment(r.order_id)])
        uow.commit()
    with uow_factory.read() as uow:
        ids = lambda found: [r.order_id for r in found]  # noqa: E731
        assert ids(uow.requests.search(limit=2)) == ["s-0", "s-1"]
        assert ids(uow.requests.search(after="s-1", limit=2)) == ["s-2", "s-3"]
        assert ids(uow.requests.search(after="s-4")) == []
        assert ids(uow.requests.search(label="even")) == ["s-0", "s-2", "s-4"]
        assert ids(uow.requests.search(state="PENDING", label="even")) == ["s-0", "s-4"]
        assert ids(uow.requests.search(state=paid.state.name)) == ["s-2"]
