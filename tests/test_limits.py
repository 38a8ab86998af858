"""Withdrawal limits: the rolling windows of domain/limits.py, and the check-and-take of the
transaction manager over every storage (memory, SQLite, PostgreSQL). A hypothesis state machine
interleaves requests, releases and the passing of time: no sequence lets a user or the platform
past a limit."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kaccy_bitcoin.adapters.memory.storage import MemoryUnitOfWorkFactory
from kaccy_bitcoin.application.transaction_manager import check_limits
from kaccy_bitcoin.domain import limits as L
from kaccy_bitcoin.domain.errors import InvalidAmount, LimitExceeded

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def usage(n: int, amount: int, at: dt.datetime, user: str | None = "u", returned: bool = False) -> L.Usage:
    return L.Usage(f"w{n}", user, amount, at, returned)


def test_each_limit_refuses_with_its_name_limit_and_remaining() -> None:
    user = L.Limits("u", daily_sat=1000, monthly_sat=5000, single_max_sat=600, hourly_sat=800)
    used = [usage(1, 500, T0 - dt.timedelta(minutes=30)), usage(2, 300, T0 - dt.timedelta(hours=5)),
            usage(3, 4100, T0 - dt.timedelta(days=10))]
    cases = [(700, "single", 600, 600), (400, "hourly", 800, 300), (250, "daily", 1000, 200)]
    for amount, name, limit, remaining in cases:
        with pytest.raises(LimitExceeded) as refused:
            L.check(amount, T0, user, used[:2] if name != "monthly" else used, None, [])
        assert (refused.value.limit, refused.value.limit_sat, refused.value.remaining_sat) == (name, limit, remaining)
    with pytest.raises(LimitExceeded) as refused:
        L.check(150, T0, user, used, None, [])
    assert (refused.value.limit, refused.value.remaining_sat) == ("monthly", 100)
    L.check(200, T0, user, used[:2], None, [])
    platform = L.Limits(L.PLATFORM, daily_sat=10_000)
    with pytest.raises(LimitExceeded) as refused:
        L.check(100, T0, None, [], platform, [usage(9, 9950, T0, user=None)])
    assert refused.value.details() == {"limit": "platform", "limit_sat": 10_000, "remaining_sat": 50}


def test_windows_roll_and_returned_amounts_do_not_count() -> None:
    user = L.Limits("u", daily_sat=1000)
    day_old = usage(1, 1000, T0 - dt.timedelta(days=1))                     # just outside (now - 24 h, now]
    L.check(1000, T0, user, [day_old], None, [])
    with pytest.raises(LimitExceeded):
        L.check(1, T0, user, [usage(1, 1000, T0 - dt.timedelta(hours=23, minutes=59))], None, [])
    L.check(1000, T0, user, [usage(1, 1000, T0, returned=True)], None, [])


def test_an_amount_taken_after_the_clock_was_read_still_counts() -> None:
    """A request reads the clock, then waits for the limits' lock while another process takes an
    amount stamped a moment later: that amount must count (it did not, and 7 of 20 concurrent
    requests fit a limit made for 5)."""
    user = L.Limits("u", daily_sat=150_000, hourly_sat=150_000, monthly_sat=150_000)
    later = [usage(n, 30_000, T0 + dt.timedelta(milliseconds=50 * n)) for n in range(1, 6)]
    for name in ("hourly", "daily", "monthly"):
        with pytest.raises(LimitExceeded) as refused:
            L.check(30_000, T0, L.Limits("u", **{f"{name}_sat": 150_000}), later, None, [])
        assert (refused.value.limit, refused.value.remaining_sat) == (name, 0)
    with pytest.raises(LimitExceeded):
        L.check(30_000, T0, user, later, None, [])
    with pytest.raises(LimitExceeded) as refused:
        L.check(1, T0, None, [], L.Limits(L.PLATFORM, daily_sat=150_000), later)
    assert refused.value.limit == "platform"


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(InvalidAmount):
        L.Limits("u", daily_sat=-1)
    with pytest.raises(InvalidAmount):
        L.check(0, T0, None, [], None, [])


def window_sum(entries: list[L.Usage], end: dt.datetime, window: dt.timedelta) -> int:
    """What was taken in the window (end - window, end]: no window may ever hold more than a limit."""
    return sum(e.amount_sat for e in entries if end - window < e.at <= end)


USERS = ("alice", "bob")
AMOUNTS = st.integers(min_value=1, max_value=400)


class LimitCounters(RuleBasedStateMachine):
    """Requests (check-and-take in one unit of work, as the transaction manager does), releases
    (a cancel/expiry/void gives the amount back) and time moving forwards, in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.uow = self.make_store()
        self.now = T0
        self.n = 0
        self.taken: dict[str, L.Usage] = {}
        self.limits = {"alice": L.Limits("alice", daily_sat=1000, monthly_sat=3000, single_max_sat=300,
                                         hourly_sat=500),
                       "bob": L.Limits("bob", daily_sat=700)}
        self.platform = L.Limits(L.PLATFORM, daily_sat=1500)
        with self.uow() as u:
            for limits in (*self.limits.values(), self.platform):
                u.limits.set(limits, T0)
            u.commit()

    def make_store(self):  # noqa: ANN201
        return MemoryUnitOfWorkFactory()

    @rule(user=st.sampled_from(USERS + (None,)), amount=AMOUNTS, commit=st.booleans())
    def request(self, user: str | None, amount: int, commit: bool) -> None:
        self.n += 1
        with self.uow() as u:
            try:
                check_limits(u, user, amount, self.now, lock=True)
            except LimitExceeded as refused:
                assert refused.remaining_sat < amount
                return
            u.limits.take(L.Usage(f"w{self.n}", user, amount, self.now))
            if commit:                      # an abandoned unit of work takes nothing
                u.commit()
                self.taken[f"w{self.n}"] = L.Usage(f"w{self.n}", user, amount, self.now)

    @precondition(lambda self: self.taken)
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.taken)))
        with self.uow() as u:
            u.limits.give_back(wid)
            u.commit()
        self.taken[wid] = L.Usage(wid, self.taken[wid].user, self.taken[wid].amount_sat, self.taken[wid].at, True)

    @rule(seconds=st.sampled_from([1, 59, 600, 3599, 3600, 3601, 86_399, 86_400, 86_401, 20 * 86_400]))
    def time_passes(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)

    @invariant()
    def nobody_is_ever_past_a_limit(self) -> None:
        with self.uow.read() as u:
            stored = {x.withdrawal_id: x for x in u.limits.platform_usage(T0 - L.MONTH)}
        assert {k: (v.amount_sat, v.returned) for k, v in stored.items()} == {
            k: (v.amount_sat, v.returned) for k, v in self.taken.items()}
        live = [x for x in stored.values() if not x.returned]
        for end in {x.at for x in live}:      # a window's sum is largest when it ends at an entry
            assert window_sum(live, end, L.DAY) <= self.platform.daily_sat
            for user, limits in self.limits.items():
                mine = [x for x in live if x.user == user]
                for name, window in L.WINDOWS.items():
                    limit = limits.by_name()[name]
                    if limit is not None:
                        assert window_sum(mine, end, window) <= limit
                if limits.single_max_sat is not None:
                    assert all(x.amount_sat <= limits.single_max_sat for x in mine)


TestLimitCounters = LimitCounters.TestCase
TestLimitCounters.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


class SqliteLimitCounters(LimitCounters):
    """The same interleavings over the SQL adapter (a new SQLite file per example)."""

    def make_store(self):  # noqa: ANN201
        import tempfile

        from kaccy_bitcoin.adapters.sql.storage import SqlUnitOfWorkFactory, make_engine

        self._dir = tempfile.TemporaryDirectory()
        self._engine = make_engine(f"sqlite:///{self._dir.name}/limits.db")
        return SqlUnitOfWorkFactory(self._engine)

    def teardown(self) -> None:
        self._engine.dispose()
        self._dir.cleanup()

TestSqliteLimitCounters = SqliteLimitCounters.TestCase
TestSqliteLimitCounters.settings = settings(max_examples=15, stateful_step_count=25, deadline=None)


def test_storage_takes_locks_and_gives_back(uow_factory) -> None:  # noqa: ANN001
    with uow_factory() as u:
        u.limits.set(L.Limits("carol", daily_sat=100), T0)
        u.limits.set(L.Limits(L.PLATFORM, daily_sat=1000), T0)
        u.commit()
    with uow_factory() as u:
        assert u.limits.lock([L.PLATFORM, "carol", "nobody"]) == {
            L.PLATFORM: L.Limits(L.PLATFORM, daily_sat=1000), "carol": L.Limits("carol", daily_sat=100)}
        check_limits(u, "carol", 60, T0, lock=True)
        u.limits.take(L.Usage("w1", "carol", 60, T0, destinations=("bcrt1qexample",)))
        u.commit()
    with uow_factory() as u:
        with pytest.raises(LimitExceeded) as refused:
            check_limits(u, "carol", 60, T0, lock=True)
        assert refused.value.details() == {"limit": "daily", "limit_sat": 100, "remaining_sat": 40}
        assert u.limits.user_usage("carol", T0)[0].destinations == ("bcrt1qexample",)
        u.limits.give_back("w1")
        u.commit()
    with uow_factory() as u:
        check_limits(u, "carol", 100, T0, lock=True)
        assert [x.returned for x in u.limits.user_usage("carol", T0 - L.DAY)] == [True]
        # It paid after all (a cancelled PSBT sent elsewhere): counted again, once.
        assert (u.limits.take_again("w1"), u.limits.take_again("w1"), u.limits.take_again("nope")) == (
            True, False, False)
        u.commit()
    with uow_factory() as u:
        assert [x.returned for x in u.limits.user_usage("carol", T0 - L.DAY)] == [False]
        with pytest.raises(LimitExceeded):
            check_limits(u, "carol", 60, T0, lock=True)


def test_limits_set_and_show_from_the_command_line(tmp_path) -> None:  # noqa: ANN001
    import json
    import os
    import pathlib
    import subprocess
    import sys

    cli = str(pathlib.Path(sys.executable).parent / "kaccy-bitcoin")
    env = {**os.environ, "KACCY_DATABASE_URL": f"sqlite:///{tmp_path}/l.db", "KACCY_DATA_DIR": str(tmp_path)}

    def run(*args: str) -> tuple[int, dict]:
        proc = subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=60)
        return proc.returncode, json.loads(proc.stdout)

    assert run("limits", "set", "--user", "ann", "--daily-sat", "1000", "--by", "ops") == (0, {
        "user": "ann", "daily_sat": 1000, "monthly_sat": None, "single_max_sat": None, "hourly_sat": None})
    assert run("limits", "set", "--user", "ann", "--hourly-sat", "100")[1]["daily_sat"] == 1000   # merged
    assert run("limits", "set", "--platform-daily-sat", "5000") == (0, {"platform_daily_sat": 5000})
    assert run("limits", "show", "--user", "ann") == (0, {
        "user": "ann", "daily_sat": 1000, "monthly_sat": None, "single_max_sat": None, "hourly_sat": 100,
        "platform_daily_sat": 5000})
    for bad in (["--daily-sat", "5"], [], ["--user", "ann"], ["--user", "ann", "--daily-sat", "-5"],
                ["--user", "platform", "--daily-sat", "5"]):
        rc, out = run("limits", "set", *bad)
        assert rc == 2 and out["error"]["code"] in ("invalid_amount", "invalid_user", "usage"), (bad, out)
    rc, out = run("audit", "query", "--subject", "ann")
    assert [(e["kind"], e["actor"]) for e in out["entries"]] == [("limits_set", "ops"), ("limits_set", "operator")]
