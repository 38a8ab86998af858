"""Property tests: random trigger sequences against each of the five machines,
and random chain histories against the Payment aggregate."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kaccy_bitcoin.domain.bitcoin import OutPoint, Txid
from kaccy_bitcoin.domain.errors import IllegalTransition
from kaccy_bitcoin.domain.machines import ALL_MACHINES
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.orders import OutputObservation, OutputStatus, Payment, PaymentRequest
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds, PaymentMachine, PaymentState
from kaccy_bitcoin.domain.statemachine import StateMachine

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def machine_test(cls: type[StateMachine]) -> type[RuleBasedStateMachine]:
    all_triggers = cls.triggers() + ["not_a_trigger"]

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.m = cls()
            self.tick = 0
            self.reached_terminal = None

        @rule(trigger=st.sampled_from(all_triggers), reason=st.text(max_size=5))
        def fire(self, trigger: str, reason: str) -> None:
            before = self.m.state
            allowed = cls.allowed(before)
            self.tick += 1
            at = T0 + dt.timedelta(seconds=self.tick)
            if trigger in allowed:
                record = self.m.fire(trigger, at=at, reason=reason)
                assert self.m.state == allowed[trigger]
                assert (record.source, record.dest, record.trigger, record.at, record.reason) == (
                    before.name, self.m.state.name, trigger, at, reason)
            else:
                with pytest.raises(IllegalTransition) as err:
                    self.m.fire(trigger, at=at)
                assert err.value.state == before.name and err.value.trigger == trigger
                assert trigger in str(err.value) and before.name in str(err.value)
                assert self.m.state == before

        @invariant()
        def terminal_absorbs(self) -> None:
            if self.reached_terminal is not None:
                assert self.m.state == self.reached_terminal
            elif self.m.state in cls.TERMINAL:
                self.reached_terminal = self.m.state
                assert cls.allowed(self.m.state) == {}

        @invariant()
        def only_declared_moves_and_replay(self) -> None:
            declared = {(s, m.dest, m.trigger) for m in cls.MOVES for s in m.sources}
            for record in self.m.history:
                assert (record.source, record.dest, record.trigger) in declared
            assert cls.replay(self.m.history).state == self.m.state

    Machine.__name__ = f"{cls.__name__}Test"
    return Machine


for _cls in ALL_MACHINES:
    _test = machine_test(_cls)
    _test.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
    globals()[f"Test{_cls.__name__}"] = _test.TestCase


def test_illegal_transition_names_state_and_trigger() -> None:
    m = PaymentMachine()
    with pytest.raises(IllegalTransition, match="'finalize' is not allowed in state PENDING"):
        m.fire("finalize", at=T0)


RANK = {s: i for i, s in enumerate([PaymentState.PENDING, PaymentState.UNCONFIRMED, PaymentState.CONFIRMED,
                                    PaymentState.FULL_CONFIRMED, PaymentState.FINALIZED])}


class PaymentAggregate(RuleBasedStateMachine):
    """A payment fed random observations: outputs appear, deepen, get reorged, replaced, revived."""

    def __init__(self) -> None:
        super().__init__()
        self.request = PaymentRequest("order-1", "addr", Satoshis(50_000), T0)
        self.payment = Payment("order-1")
        self.thresholds = ConfirmationThresholds(1, 3, 6)
        self.depth: dict[OutPoint, int] = {}
        self.amounts: dict[OutPoint, int] = {}
        self.live: set[OutPoint] = set()
        self.tick = 0

    def now(self) -> dt.datetime:
        self.tick += 1
        return T0 + dt.timedelta(seconds=self.tick)

    @rule(n=st.integers(0, 5), amount=st.integers(1, 80_000))
    def new_output(self, n: int, amount: int) -> None:
        op = OutPoint(Txid(f"{len(self.depth) + 1:064x}"), n)
        self.depth.setdefault(op, 0)
        self.amounts.setdefault(op, amount)
        self.live.add(op)
        self.payment.observe(self.request, OutputObservation(op, Satoshis(self.amounts[op]), self.depth[op]),
                             self.now())
        self.payment.settle(self.request, self.thresholds, self.now())

    @precondition(lambda self: self.live)
    @rule(blocks=st.integers(1, 4))
    def mine(self, blocks: int) -> None:
        for op in self.live:
            self.depth[op] += blocks
        self._poll()

    @precondition(lambda self: self.live)
    @rule(blocks=st.integers(1, 3))
    def reorg(self, blocks: int) -> None:
        for op in self.live:
            self.depth[op] = max(0, self.depth[op] - blocks)
        self._poll()

    @precondition(lambda self: self.live)
    @rule(data=st.data(), status=st.sampled_from([OutputStatus.REPLACED, OutputStatus.DOUBLE_SPENT,
                                                  OutputStatus.REORGED_OUT]))
    def lose_output(self, data: st.DataObject, status: OutputStatus) -> None:
        op = data.draw(st.sampled_from(sorted(self.live)))
        self.live.discard(op)
        self.depth[op] = 0
        self.payment.withdraw(self.request, op, status, self.now())
        self.payment.settle(self.request, self.thresholds, self.now())

    @precondition(lambda self: set(self.depth) - self.live)
    @rule(data=st.data())
    def revive_output(self, data: st.DataObject) -> None:
        op = data.draw(st.sampled_from(sorted(set(self.depth) - self.live)))
        self.live.add(op)
        self.payment.observe(self.request, OutputObservation(op, Satoshis(self.amounts[op]), 0), self.now())
        self.payment.settle(self.request, self.thresholds, self.now())

    def _poll(self) -> None:
        now = self.now()
        for op in self.live:
            self.payment.observe(self.request, OutputObservation(op, Satoshis(self.amounts[op]), self.depth[op]), now)
        self.payment.settle(self.request, self.thresholds, now)

    @invariant()
    def received_is_sum_of_live_outputs(self) -> None:
        assert self.payment.received.value == sum(self.amounts[o] for o in self.live) >= 0

    @invariant()
    def state_follows_depth_until_final(self) -> None:
        if self.payment.state is PaymentState.FINALIZED:
            return
        expected = self.thresholds.state_for(self.payment.confirmations(self.request))
        assert self.payment.state == expected

    @invariant()
    def regressions_only_through_reorg_or_drop(self) -> None:
        for record in self.payment.history:
            src, dst = PaymentState[record.source], PaymentState[record.dest]
            if dst in RANK and RANK[dst] < RANK[src]:
                assert record.trigger in ("reorg", "drop")
        assert PaymentMachine.replay(self.payment.history).state == self.payment.state

    @invariant()
    def event_ids_are_unique(self) -> None:
        ids = [e.id for e in self.payment.events]
        assert len(ids) == len(set(ids))


TestPaymentAggregate = PaymentAggregate.TestCase
TestPaymentAggregate.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
