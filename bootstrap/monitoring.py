"""The continuous monitor as every long-running face runs it (`kaccy-bitcoin monitor`, `run`,
the embedding API's `KaccyBitcoin.run_monitor`, and a service that wants its monitors):
polls on the interval and on the node's ZMQ notifications, and (LND configured) follows the
invoice stream, only while this process leads among those sharing the database."""
from __future__ import annotations

import asyncio
import inspect
import os
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from kaccy_bitcoin.application.leadership import RunAsLeader
from kaccy_bitcoin.application.monitor import RunMonitor
from kaccy_bitcoin.bootstrap.tuning import GcPausedDuring, freeze_startup_objects
from kaccy_bitcoin.domain.events import DomainEvent

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container

STANDBY_RETRY_MAX = 1.0   # seconds: a standby tries the lock at least this often


async def _resolved(provided: Any) -> Any:
    return await provided if inspect.isawaitable(provided) else provided


async def run_monitors(container: Container, stop: asyncio.Event, *, interval: float | None = None,
                       say: Callable[[dict[str, Any]], None] = lambda _: None,
                       on_events: Callable[[list[DomainEvent]], None] | None = None,
                       own_process: bool = False,
                       tick: Callable[[], Any] | None = None,
                       also: Sequence[Callable[[asyncio.Event], Awaitable[None]]] = ()) -> None:
    """Run the monitors until `stop` is set. `say` hears the JSON-able state lines (`started`,
    then `standby` / `leader` / `lost` with the pid); `on_events` each poll's committed events.
    `own_process`: the process is ours (the command line), so its GC may be tuned for polls.
    `tick`: one round of the monitor, when the caller wraps the container's (serve counts them).
    `also`: more work only the leader does (serve's webhook deliveries), run beside the polls
    until the leadership ends."""
    interval = interval if interval is not None else container.config.poll_interval()
    tick = tick if tick is not None else await _resolved(container.services.monitor_tick())
    poll = GcPausedDuring(tick) if own_process else tick
    wake = await _resolved(container.gateways.chain_notifications())
    leadership = await _resolved(container.storage.leadership())
    await leadership.verify()   # e.g. PgBouncer in transaction pooling: refused before leading
    say({"monitor": "started", "interval": interval, "notifications": wake.sources, "lock": leadership.describe})
    if own_process:
        freeze_startup_objects()
    runner = RunMonitor(poll, interval, wake)

    async def monitors(until: asyncio.Event) -> None:
        # With LND configured, its invoice stream is followed beside the polls.
        beside = [asyncio.ensure_future(work(until)) for work in also]
        if container.config.lnd_rest_url():
            say({"monitor": "following", "what": "the LND invoice stream"})
            watch = await _resolved(container.services.watch_invoices())
            beside.append(asyncio.ensure_future(watch(until, on_events=on_events)))
        try:
            await runner(on_events=on_events, stop=until)
        finally:
            until.set()
            if beside:
                await asyncio.wait(beside)

    await RunAsLeader(leadership, retry=min(interval, STANDBY_RETRY_MAX))(
        monitors, stop, on_change=lambda state: say({"monitor": state, "pid": os.getpid()}))
