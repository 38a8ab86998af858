"""`kaccy-bitcoin serve`: the HTTP API, the payment monitor and the webhook deliveries in one
process, each of which can be switched off. Stops on SIGINT/SIGTERM.

Prints one JSON line, `{"listening": "http://HOST:PORT"}`, once the API accepts connections
(with `--port 0`, the port the system chose), so scripts can wait for it; with `--onion`, once the
onion service is added too: `{"listening": ..., "onion": "<56 characters>.onion"}`."""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

import attrs

from kaccy_bitcoin.bootstrap.container import Container

log = logging.getLogger("kaccy_bitcoin.serve")


@attrs.frozen
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    api: bool = True
    monitor: bool = True
    webhooks: bool = True
    interval: float | None = None
    workers: int = 1          # API processes in all (this one included), sharing the port
    reuse_port: bool = False  # set in the extra workers: bind beside the first one
    onion: bool = False       # publish the API as a Tor onion service (adapters/net/tor.py)
    # Called with the base URL ("http://HOST:PORT") once the API accepts connections.
    on_listening: Callable[[str], None] | None = None


def configure_json_logging(level: str) -> None:
    from kaccy_bitcoin.adapters.http_api.logs import JsonLogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def use_case_resolver(container: Container) -> Callable[[str], Awaitable[Any]]:
    """The container's use cases by name, each built once (they hold no request state)."""
    built: dict[str, Any] = {}
    lock = asyncio.Lock()

    async def use(name: str) -> Any:
        if name not in built:
            async with lock:
                if name not in built:
                    made = getattr(container.services, name)()
                    built[name] = await made if inspect.isawaitable(made) else made
        return built[name]
    return use


async def serve(container: Container, options: ServeOptions) -> dict[str, Any]:
    from aiohttp import web

    from kaccy_bitcoin.adapters.http_api.app import Api, ApiSettings
    from kaccy_bitcoin.adapters.http_api.metrics import Metrics
    from kaccy_bitcoin.adapters.observability import observe_rpc

    config = container.config
    configure_json_logging(config.log_level())
    use = use_case_resolver(container)
    store = container.storage.service_store()
    metrics = Metrics(stats=store.stats)
    undo_rpc = observe_rpc(metrics.rpc_call)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Writes of the service store run in these threads (they may wait for SQLite's write lock
    # while another process writes): enough that waiting writers leave room for other work.
    loop.set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="kaccy"))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Built now, so a setting they need that is missing stops the start with its error.
    lightning = options.monitor and bool(config.lnd_rest_url())
    if options.monitor:
        await use("monitor_tick")
        await use("check_readiness")
    if lightning:
        await use("watch_invoices")
    if options.webhooks:
        await use("deliver_webhooks")
    if options.monitor or options.webhooks:
        # The leadership locks must work here (not behind PgBouncer's transaction pooling).
        await container.storage.leadership().verify()
    tasks: list[asyncio.Task[Any]] = []
    runner = None
    onion = None
    workers: list[Any] = []
    try:
        if options.monitor:
            tasks.append(asyncio.create_task(_monitor(container, use, metrics, options, stop), name="monitor"))
        if options.webhooks:
            # Only the holder of the webhook leadership delivers, with or without the monitors
            # here: N instances sharing a database never all send the same event.
            tasks.append(asyncio.create_task(_lead_webhooks(container, use, metrics, options, stop), name="webhooks"))
        if options.api:
            await _prepare_orders(use)
            api = Api(use, container.services.authenticate(), store, container.gateways.clock(), metrics,
                      ApiSettings(max_body_bytes=config.api_max_body(), rate_per_second=config.api_rate_limit(),
                                  rate_burst=config.api_rate_burst()))
            runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
            await runner.setup()
            _settle_garbage()
            site = web.TCPSite(runner, options.host, options.port, backlog=1024,
                               reuse_port=options.reuse_port or options.workers > 1)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr] - port 0: the chosen one
            host = f"[{options.host}]" if ":" in options.host else options.host
            if options.workers > 1:
                workers = await _start_workers(container, options, port)
            announced = {"listening": f"http://{host}:{port}"}
            if options.onion:
                from kaccy_bitcoin.adapters.net.tor import OnionService

                onion = OnionService(config.tor_control(), config.tor_control_password(), config.data_dir())
                announced["onion"] = await asyncio.to_thread(onion.publish, options.host, port)
            print(json.dumps(announced), flush=True)
            if options.on_listening is not None:
                options.on_listening(f"http://{host}:{port}")
            log.info("listening", extra={"url": f"http://{host}:{port}", "monitor": options.monitor,
                                         "webhooks": options.webhooks, "onion": announced.get("onion")})
        await stop.wait()
        return {"stopped": True}
    finally:
        stop.set()
        for worker in workers:
            try:
                worker.terminate()
            except ProcessLookupError:   # it died already: reaped and reported below
                pass
        if onion is not None:
            await asyncio.to_thread(onion.close)
        if runner is not None:
            await runner.cleanup()
        for worker in workers:
            status = await worker.wait()
            if status not in (0, -signal.SIGTERM):
                log.warning("API worker %s exited with status %s", worker.pid, status)
        for task in tasks:
            try:
                await asyncio.wait_for(task, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            except Exception:  # noqa: BLE001 - stopping: report and go on
                log.exception("%s stopped with an error", task.get_name())
        undo_rpc()


def _settle_garbage() -> None:
    """What start-up made (modules, the container, the app) is kept for good: move it out of
    the collector's reach, so a full collection, which otherwise walks every one of those
    objects with requests waiting, stays short (tens of ms measured without this)."""
    import gc

    gc.collect()
    gc.freeze()


async def _prepare_orders(use: Any) -> None:
    """Before listening: the node watches the next gap of deposit addresses. Best effort: a
    node that does not answer yet is asked again by the first order."""
    try:
        await (await use("create_order")).prepare()
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("could not prepare the deposit address range before listening: %s", exc)


def _worker_env(container: Container) -> dict[str, str]:
    """This process's settings as environment variables (`run` may have set some in-process,
    such as the address of the regtest node it started)."""
    import os

    from kaccy_bitcoin.bootstrap.config import DEFAULTS

    env = {k: v for k, v in os.environ.items() if k != "KACCY_CONFIG"}
    for key in DEFAULTS:
        value = container.config.get(key)
        if value is not None:   # as the settings read it again: a flag as true/false
            env[f"KACCY_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


async def _start_workers(container: Container, options: ServeOptions, port: int) -> list[Any]:
    """`workers - 1` more API processes on the same port (SO_REUSEPORT: the kernel spreads the
    connections), without monitor or webhooks; returns once each one listens."""
    command = [sys.executable, "-c", "import sys; from kaccy_bitcoin.bootstrap.cli import main; sys.exit(main())",
               "serve", "--host", options.host, "--port", str(port), "--no-monitor", "--no-webhooks",
               "--reuse-port"]
    started = [await asyncio.create_subprocess_exec(*command, env=_worker_env(container),
                                                    stdout=asyncio.subprocess.PIPE)
               for _ in range(options.workers - 1)]
    for worker in started:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"an API worker exited with status {await worker.wait()} before listening")
        if b'"listening"' not in line:   # its one line is the error it stopped with
            raise RuntimeError(f"an API worker could not start: {line.decode(errors='replace').strip()}")
    return started


async def _monitor(container: Container, use: Callable[[str], Awaitable[Any]], metrics: Any,
                   options: ServeOptions, stop: asyncio.Event) -> None:
    from kaccy_bitcoin.adapters.observability import correlation_id
    from kaccy_bitcoin.bootstrap.monitoring import run_monitors

    tick = await use("monitor_tick")
    readiness = await use("check_readiness")
    polls = 0

    async def poll() -> list[Any]:
        nonlocal polls
        polls += 1
        token = correlation_id.set(f"poll-{polls}")
        try:
            try:
                events = await tick()
            except Exception:
                metrics.monitor_polls.labels("error").inc()
                raise
            metrics.monitor_polls.labels("ok").inc()
            try:
                lag = await readiness.monitor_lag()
                if lag is not None:
                    metrics.monitor_lag.set(lag)
            except Exception:  # noqa: BLE001 - the lag is a metric; the poll succeeded
                log.warning("could not measure the monitor's lag", exc_info=True)
            return events
        finally:
            correlation_id.reset(token)

    def seen(events: list[Any]) -> None:   # each poll's and the invoice stream's committed events
        for e in events:
            metrics.events.labels(e.kind).inc()
            log.info("event %s", e.kind, extra={"event_kind": e.kind, "subject": e.subject})

    def state(line: dict[str, Any]) -> None:
        log.info("monitor %s", line["monitor"], extra={"monitor": line})

    # Several instances share the database: only the one holding the leadership lock runs the
    # monitors (the polls, woken by the node's ZMQ notifications, and LND's invoice stream); the
    # others serve the API and take over within one poll interval when the leader dies.
    interval = options.interval if options.interval is not None else container.config.poll_interval()
    await run_monitors(container, stop, interval=interval, say=state, on_events=seen, tick=poll)


async def _lead_webhooks(container: Container, use: Callable[[str], Awaitable[Any]], metrics: Any,
                         options: ServeOptions, stop: asyncio.Event) -> None:
    """Deliver webhooks while this process holds the webhook leadership; a standby takes over
    within a second or a poll interval (whichever is shorter) of the leader's death."""
    from kaccy_bitcoin.application.leadership import RunAsLeader
    from kaccy_bitcoin.bootstrap.monitoring import STANDBY_RETRY_MAX

    leadership = container.storage.webhook_leadership()
    interval = options.interval if options.interval is not None else container.config.poll_interval()

    def said(state: str) -> None:
        log.info("webhooks %s", state, extra={"webhooks": state, "lock": leadership.describe})

    await RunAsLeader(leadership, retry=min(interval, STANDBY_RETRY_MAX))(
        lambda until: _webhooks(use, metrics, until), stop, on_change=said)


async def _webhooks(use: Callable[[str], Awaitable[Any]], metrics: Any, stop: asyncio.Event) -> None:
    from kaccy_bitcoin.application.webhooks import run_deliveries

    deliver = await use("deliver_webhooks")
    deliver.on_attempt = metrics.webhook_attempt
    await run_deliveries(deliver, stop, on_error=lambda exc: log.warning("webhook round failed: %s", exc))
