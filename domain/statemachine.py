"""The common shape of the five state machines, built on `transitions`.

Each machine module declares an Enum of states, a table of moves
(trigger, sources, destination) and its terminal states. `StateMachine` runs the
table through `transitions.Machine` with auto-transitions off, so only declared
moves exist; every move is recorded as a `Transition` (what, from, to, when, why),
and replaying the recorded moves from the initial state reproduces the current one.
"""
from __future__ import annotations

import datetime as dt
import enum
import threading
from typing import ClassVar, Iterable

import attrs
from transitions import Machine, MachineError

from kaccy_bitcoin.domain.errors import IllegalTransition


@attrs.frozen
class Move:
    """One row of a transition table."""

    trigger: str
    sources: tuple[str, ...]
    dest: str


@attrs.frozen
class Transition:
    """The domain event recorded for every move a machine makes."""

    machine: str
    trigger: str
    source: str
    dest: str
    at: dt.datetime
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "machine": self.machine,
            "trigger": self.trigger,
            "source": self.source,
            "dest": self.dest,
            "at": self.at.isoformat(),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Transition:
        return cls(
            machine=data["machine"],
            trigger=data["trigger"],
            source=data["source"],
            dest=data["dest"],
            at=dt.datetime.fromisoformat(data["at"]),
            reason=data.get("reason", ""),
        )


_local = threading.local()


class _Holder:
    """The object `transitions` drives; keeps the library's helpers off our aggregates."""

    state: enum.Enum


class StateMachine:
    """Base class: subclasses set NAME, States, INITIAL, MOVES and TERMINAL."""

    NAME: ClassVar[str]
    States: ClassVar[type[enum.Enum]]
    INITIAL: ClassVar[enum.Enum]
    MOVES: ClassVar[tuple[Move, ...]]
    TERMINAL: ClassVar[frozenset[enum.Enum]] = frozenset()

    def __init__(self, state: enum.Enum | None = None, history: Iterable[Transition] = ()) -> None:
        self._state = self.INITIAL if state is None else self.States(state)
        self.history: list[Transition] = list(history)

    # -- reading ---------------------------------------------------------------
    @property
    def state(self) -> enum.Enum:
        return self._state

    @property
    def is_terminal(self) -> bool:
        return self._state in self.TERMINAL

    @classmethod
    def triggers(cls) -> list[str]:
        seen: dict[str, None] = {}
        for move in cls.MOVES:
            seen.setdefault(move.trigger, None)
        return list(seen)

    @classmethod
    def allowed(cls, state: enum.Enum) -> dict[str, enum.Enum]:
        """trigger -> destination for every move declared from `state`."""
        return {m.trigger: cls.States(m.dest) for m in cls.MOVES if state.value in m.sources}

    def can(self, trigger: str) -> bool:
        return trigger in self.allowed(self._state)

    # -- moving ----------------------------------------------------------------
    def fire(self, trigger: str, *, at: dt.datetime, reason: str = "") -> Transition:
        """Make the declared move for `trigger`, record it and return the record."""
        holder = self._machine_holder()
        source = self._state
        try:
            holder.trigger(trigger)  # type: ignore[attr-defined]
        except (MachineError, AttributeError):
            holder.state = source
            raise IllegalTransition(self.NAME, source.name, trigger) from None
        self._state = holder.state
        record = Transition(self.NAME, trigger, source.name, self._state.name, at, reason)
        self.history.append(record)
        return record

    def _machine_holder(self) -> _Holder:
        # Building a transitions.Machine costs ~100 µs, so each thread keeps one per
        # machine class and points it at this aggregate's state before each trigger.
        cache = _local.__dict__.setdefault("holders", {})
        holder = cache.get(type(self))
        if holder is None:
            holder = _Holder()
            Machine(
                model=holder,
                states=list(self.States),
                transitions=[
                    {"trigger": m.trigger, "source": [self.States(s) for s in m.sources],
                     "dest": self.States(m.dest)}
                    for m in self.MOVES
                ],
                initial=self.INITIAL,
                auto_transitions=False,
                ignore_invalid_triggers=False,
            )
            cache[type(self)] = holder
        holder.state = self._state
        return holder

    @classmethod
    def replay(cls, history: Iterable[Transition]) -> StateMachine:
        """Rebuild a machine from its recorded moves, checking each one is legal."""
        machine = cls()
        for record in history:
            if record.source != machine.state.name:
                raise IllegalTransition(cls.NAME, machine.state.name, record.trigger)
            machine.fire(record.trigger, at=record.at, reason=record.reason)
            if machine.state.name != record.dest:
                raise IllegalTransition(cls.NAME, record.source, record.trigger)
        return machine


def moves(*rows: tuple[str, str | tuple[str, ...], str]) -> tuple[Move, ...]:
    """Build a transition table from (trigger, source or sources, dest) rows."""
    return tuple(Move(t, (s,) if isinstance(s, str) else tuple(s), d) for t, s, d in rows)
