"""The monitor wakes on the node's ZMQ notifications (found with getzmqnotifications) and keeps
its interval poll as the safety net: a payment is seen within seconds with a 60 s interval, and
without ZMQ the interval alone still finds it."""
from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from kaccy_bitcoin.adapters.bitcoin_core.zmq_notifications import ZmqNotifications, endpoints
from kaccy_bitcoin.application.monitor import RunMonitor
from kaccy_bitcoin.ports.chain_notifications import ChainNotifications
from tests.payments_harness import CLI, Shop


class Monitor:
    """`kaccy-bitcoin monitor` as its own process; its stderr read line by line as JSON."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict] = []

    @classmethod
    async def start(cls, shop: Shop, *args: str, **env: str) -> Monitor:
        proc = await asyncio.create_subprocess_exec(CLI, "monitor", *args, env={**shop.env, **env},
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def line(self, predicate, timeout: float = 30) -> dict:  # noqa: ANN001
        async def read() -> dict:
            while True:
                raw = await self.proc.stderr.readline()
                assert raw, f"the monitor exited: {self.lines}"
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    continue
                self.lines.append(parsed)
                if predicate(parsed):
                    return parsed
        return await asyncio.wait_for(read(), timeout)

    async def stop(self) -> dict:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        return json.loads(out) if out.strip() else {}


def detected(order_id: str):  # noqa: ANN201
    return lambda e: e.get("kind") == "payment_detected" and e.get("subject") == order_id


@pytest.mark.node
async def test_a_payment_is_seen_within_seconds_with_a_60s_interval(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    order = shop.order("zmq-1", 50_000)
    monitor = await Monitor.start(shop, "--interval", "60")
    try:
        started = await monitor.line(lambda e: e.get("monitor") == "started")
        assert started["interval"] == 60 and started["notifications"], started
        assert f"hashblock,sequence {node.node.zmq_url}" in started["notifications"]
        await asyncio.sleep(0.5)   # past the first poll, which happens at start
        sent = time.monotonic()
        await node.send(order["address"], 50_000)
        await monitor.line(detected("zmq-1"), timeout=10)
        assert time.monotonic() - sent < 5
        await node.mine(1)
        confirmed = await monitor.line(lambda e: e.get("kind") == "order_paid" and e.get("subject") == "zmq-1",
                                       timeout=10)
        assert confirmed
    finally:
        stopped = await monitor.stop()
    assert stopped == {"stopped": True, "events_seen": len([e for e in monitor.lines if "kind" in e])}
    assert shop.show("zmq-1")["status"] == "confirmed"


@pytest.mark.node
async def test_without_zmq_the_interval_poll_still_finds_payments(node, tmp_path) -> None:
    shop = Shop(node, tmp_path, KACCY_ZMQ="off")
    order = shop.order("interval-1", 40_000)
    monitor = await Monitor.start(shop, "--interval", "1")
    try:
        started = await monitor.line(lambda e: e.get("monitor") == "started")
        assert started["notifications"] == []
        await node.send(order["address"], 40_000)
        await monitor.line(detected("interval-1"), timeout=15)
    finally:
        await monitor.stop()


def test_endpoints_from_getzmqnotifications() -> None:
    answer = [{"type": "pubsequence", "address": "tcp://127.0.0.1:28332", "hwm": 1000},
              {"type": "pubhashblock", "address": "tcp://127.0.0.1:28332", "hwm": 1000},
              {"type": "pubrawblock", "address": "tcp://127.0.0.1:28333", "hwm": 1000},
              {"type": "pubrawtx", "address": "tcp://0.0.0.0:28334", "hwm": 1000}]
    assert endpoints(answer, "http://10.1.2.3:8332") == {
        "tcp://127.0.0.1:28332": ["sequence", "hashblock"], "tcp://10.1.2.3:28334": ["rawtx"]}
    assert endpoints([], "http://127.0.0.1:8332") == {}


class FakeRpc:
    url = "http://127.0.0.1:18443"

    def __init__(self, answer) -> None:  # noqa: ANN001
        self.answer = answer

    async def call(self, method: str, *params):  # noqa: ANN002, ANN201
        assert method == "getzmqnotifications"
        return self.answer


async def test_a_node_publishing_nothing_gives_an_interval_only_monitor() -> None:
    quiet = await ZmqNotifications.discover(FakeRpc([]))
    assert quiet.sources == []
    started = time.monotonic()
    assert await quiet.wait(0.1) is False
    assert time.monotonic() - started >= 0.09
    quiet.close()


class ScriptedWake(ChainNotifications):
    """Notifications at given moments (seconds after start), or a failure."""

    def __init__(self, at: list[float], fail: bool = False) -> None:
        self.at = sorted(at)
        self.fail = fail
        self.t0 = time.monotonic()

    @property
    def sources(self) -> list[str]:
        return ["scripted"]

    async def wait(self, timeout: float) -> bool:
        if self.fail:
            raise OSError("socket gone")
        now = time.monotonic() - self.t0
        due = [t for t in self.at if t > now - 0.001]
        if due and due[0] - now <= timeout:
            await asyncio.sleep(max(due[0] - now, 0))
            self.at.remove(due[0])
            return True
        await asyncio.sleep(timeout)
        return False


async def run_for(seconds: float, wake: ChainNotifications | None, interval: float) -> list[float]:
    polls: list[float] = []
    t0 = time.monotonic()

    async def poll() -> list:
        polls.append(round(time.monotonic() - t0, 2))
        return []

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await asyncio.wait_for(RunMonitor(poll, interval, wake, settle=0.1, min_gap=0)(stop=stop), seconds + 2)
    return polls


async def test_run_monitor_polls_on_a_notification_then_once_more_after_settling() -> None:
    polls = await run_for(0.8, ScriptedWake([0.3]), interval=60)
    # at start; at the notification (0.3); once more after settling (0.4); then only the interval
    assert len(polls) == 3 and abs(polls[1] - 0.3) < 0.08 and abs(polls[2] - 0.4) < 0.08, polls


async def test_run_monitor_falls_back_to_the_interval_when_notifications_fail() -> None:
    polls = await run_for(0.75, ScriptedWake([], fail=True), interval=0.2)
    assert len(polls) >= 3, polls


class FailingRpc(FakeRpc):
    def __init__(self, error: Exception) -> None:
        super().__init__([])
        self.error = error
        self.calls = 0

    async def call(self, method: str, *params):  # noqa: ANN002, ANN201
        self.calls += 1
        raise self.error


async def test_waiting_for_the_wallets_is_best_effort() -> None:
    from kaccy_bitcoin.adapters.bitcoin_core.errors import RpcConnectionError, RpcError

    down = ZmqNotifications({}, FailingRpc(RpcConnectionError("node down")))
    await down._wallets_caught_up()          # logged, not raised: the poll says the node is down
    await down._wallets_caught_up()
    assert down._rpc.calls == 2
    old = ZmqNotifications({}, FailingRpc(RpcError("syncwithvalidationinterfacequeue", -32601, "Method not found")))
    await old._wallets_caught_up()          # a node without the RPC: not asked again
    assert old._rpc is None


class SlowToReport(ChainNotifications):
    """A notification that arrives just before the timeout and takes a moment to handle (the
    wait for the node's wallets): it must still count as a notification."""

    def __init__(self) -> None:
        self.reported = 0

    @property
    def sources(self) -> list[str]:
        return ["slow"]

    async def wait(self, timeout: float) -> bool:
        await asyncio.sleep(timeout * 0.9)
        await asyncio.sleep(timeout * 0.3)   # handling it runs past the timeout
        self.reported += 1
        return True


async def test_a_notification_handled_past_the_timeout_still_counts() -> None:
    wake = SlowToReport()
    polls = await run_for(0.5, wake, interval=0.1)
    # every wait reported a notification, so every sleep was a settle (0.1 s), none was lost
    assert wake.reported >= 3 and len(polls) == wake.reported + 1, (polls, wake.reported)
