"""One round of the monitor, each part failing alone.

A round runs its phases in turn: the payment poll, following the withdrawals, the open
Lightning invoices (LND configured), then any further steps (a consolidation proposal). Each
phase commits its own work, so a phase that raises costs only its own round: the others still
run and commit. Inside a phase, an item that cannot be handled (one withdrawal whose
rebroadcast fails) is skipped the same way by the phase itself, which reports it.

Whatever was skipped is logged on every round and alerted once: the event
`monitor_item_failed` has an id made of the phase, the item and the cause, so the outbox
(which records an id once) keeps one alert per item and cause, across rounds and restarts.
A round with a failed phase ends with `MonitorPollFailed` (the poll itself failed: an outside
failure), carrying what the other phases committed; a round where only items failed returns
its events with the failures beside them.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any, Awaitable, Callable, Iterable, Sequence

import attrs

from kaccy_bitcoin.application.providers import resolved
from kaccy_bitcoin.domain.errors import KaccyError, MonitorPollFailed
from kaccy_bitcoin.domain.events import DomainEvent
from kaccy_bitcoin.ports.clock import Clock
from kaccy_bitcoin.ports.events import EventPublisher
from kaccy_bitcoin.ports.storage import UnitOfWorkFactory

log = logging.getLogger(__name__)


@attrs.frozen
class ItemFailure:
    """Something a monitor phase could not handle: one item (`item` set) or the whole phase."""

    phase: str
    item: str | None
    code: str
    message: str
    cause: str     # what keeps the alert once per item and cause: the error's code, or its type

    @classmethod
    def of(cls, phase: str, item: str | None, exc: BaseException) -> ItemFailure:
        if isinstance(exc, KaccyError):
            code = cause = exc.code
        else:
            code, cause = "internal", type(exc).__name__
        return cls(phase, item, code, str(exc) or type(exc).__name__, cause)

    def event(self, at: dt.datetime) -> DomainEvent:
        """The alert; the same item failing for the same cause gives the same id."""
        return DomainEvent(f"monitor_item_failed:{self.phase}:{self.item or '*'}:{self.cause}",
                           "monitor_item_failed", self.item or self.phase, at, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "item": self.item, "code": self.code, "message": self.message}

    def log(self) -> None:
        what = f"{self.phase} item {self.item}" if self.item else f"the {self.phase} phase"
        log.warning("monitor: %s failed and was skipped (%s): %s", what, self.code, self.message)


# An outside system that does not answer (or refuses us) fails the whole phase, not each of its
# items one by one: every item would fail alike, and each would be alerted.
OUTSIDE_DOWN = frozenset({"node_unreachable", "node_auth_failed", "database_unavailable", "lnd_unreachable",
                          "lnd_auth_failed"})


def skipped(phase: str, item: str, exc: Exception) -> ItemFailure:
    """The failure of one item, which the phase skips; `exc` itself is raised again when it says
    an outside system is down (then the phase fails)."""
    if getattr(exc, "code", None) in OUTSIDE_DOWN:
        raise exc
    return ItemFailure.of(phase, item, exc)


class MonitorEvents(list):   # list[DomainEvent], as every phase returned before
    """The events a monitor phase (or a whole round) committed, and the items it skipped."""

    def __init__(self, events: Iterable[DomainEvent] = (), failed: Iterable[ItemFailure] = ()) -> None:
        super().__init__(events)
        self.failed: list[ItemFailure] = list(failed)


Phase = Callable[[], Awaitable[list[DomainEvent]]]


class MonitorTick:
    """One round of the service: the payment poll, following the withdrawals, then (when LND is
    configured) looking up the Lightning invoices still open (`lightning` makes the invoice
    sync of application/lightning_invoices.py, possibly awaitably), then any further steps
    (`more`, e.g. proposing a consolidation). Each phase fails alone (see the module)."""

    def __init__(self, poll: Phase, track: Phase, uow: UnitOfWorkFactory, clock: Clock, publisher: EventPublisher,
                 lightning: Callable[[], Any] | None = None, more: Sequence[Phase] = (),
                 nodes: Phase | None = None) -> None:
        self._nodes = nodes   # several Bitcoin nodes: their cross-check comes first (application/nodes.py)
        self._poll = poll
        self._track = track
        self._uow, self._clock, self._publisher = uow, clock, publisher
        self._lightning = lightning
        self._more = tuple(more)

    def _phases(self) -> list[tuple[str, Phase]]:
        phases: list[tuple[str, Phase]] = [("nodes", self._nodes)] if self._nodes is not None else []
        phases += [("payments", self._poll), ("withdrawals", self._track)]
        if self._lightning is not None:
            phases.append(("lightning", self._invoices))
        phases += [(_phase_name(step), step) for step in self._more]
        return phases

    async def _invoices(self) -> list[DomainEvent]:
        sync = await resolved(self._lightning())   # type: ignore[misc]
        return await sync.poll()

    async def __call__(self) -> MonitorEvents:
        outcome = MonitorEvents()
        broken: list[ItemFailure] = []
        for name, phase in self._phases():
            try:
                events = await phase()
            except Exception as exc:  # noqa: BLE001 - one phase's failure must not stop the others
                failure = ItemFailure.of(name, None, exc)
                failure.log()
                log.debug("the %s phase failed", name, exc_info=True)
                broken.append(failure)
                outcome.failed.append(failure)
                continue
            outcome.extend(events)
            outcome.failed.extend(getattr(events, "failed", ()))
        if outcome.failed:   # a phase may have recorded its items' alerts itself: the outbox keeps one
            outcome.extend(await self._alert(outcome.failed))
        if broken:
            raise MonitorPollFailed(f"the monitor's {', '.join(f.phase for f in broken)} phase failed: "
                                    f"{broken[0].message}", broken[0].code, list(outcome), outcome.failed)
        return outcome

    async def _alert(self, failures: list[ItemFailure]) -> list[DomainEvent]:
        """Record the alerts (each once per phase, item and cause); the database may be what
        failed, so a failure to record is only logged."""
        try:
            async with self._uow() as uow:
                now = self._clock.now()
                uow.record([f.event(now) for f in failures])
                uow.commit()
            committed = uow.committed_events()
            await self._publisher.publish(committed)
            return committed
        except Exception:  # noqa: BLE001 - the failures are logged and raised anyway
            log.warning("could not record the monitor's failures", exc_info=True)
            return []


def _phase_name(step: object) -> str:
    """A step's name in reports: its `phase`, or its class's name in snake case."""
    named = getattr(step, "phase", None)
    if isinstance(named, str):
        return named
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(step).__name__).lower()
