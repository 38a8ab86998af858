"""Scenarios that need a fake beside the real node: a manual clock, a node restarted mid-poll."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from kaccy_bitcoin.adapters.bitcoin_core.launcher import RegtestNode
from kaccy_bitcoin.adapters.bitcoin_core.rpc import BitcoinRpc
from kaccy_bitcoin.adapters.memory.clock import ManualClock
from kaccy_bitcoin.domain.money import Satoshis
from tests.node_fixture import Node
from tests.payments_harness import Shop

pytestmark = pytest.mark.node


async def test_expired_order_fails_and_a_late_payment_is_reported(node, tmp_path) -> None:
    shop = Shop(node, tmp_path)
    container = shop.container()
    clock = ManualClock(dt.datetime.now(dt.timezone.utc))
    container.gateways.clock.override(clock)
    create = await container.services.create_order()
    poll = await container.services.poll_payments()
    show = container.services.show_order()
    order = await create("late", Satoshis(40_000), expires_in=60)
    assert [e.kind for e in await poll()] == []
    clock.advance(61)
    events = await poll()
    assert [(e.kind, e.data["reason"]) for e in events] == [("payment_failed", "expired")]
    assert (await show("late")).status == "failed"
    await node.send(order["address"], 40_000)   # the address is still watched
    events = await poll()
    assert [e.kind for e in events] == ["payment_detected", "payment_late"]
    assert events[1].data["reason"] == "order_failed"
    assert "payment_late" in [e.kind for e in shop.notifier.notified]
    view = await show("late")
    assert (view.status, view.received_sat) == ("failed", 40_000)
    await container.shutdown_resources()


async def test_node_restart_mid_poll(tmp_path) -> None:
    own = RegtestNode(tmp_path / "node")
    own.start()
    rpc = BitcoinRpc(own.url, user=own.user, password=own.password)
    helper = Node(own, rpc)
    try:
        await helper.setup()
        shop = Shop(helper, tmp_path / "shop")
        container = shop.container()
        create = await container.services.create_order()
        poll = await container.services.poll_payments()
        order = await create("restart", Satoshis(25_000))
        txid = await helper.send(order["address"], 25_000)
        own.stop()
        task = asyncio.create_task(poll())   # starts against a stopped node
        await asyncio.sleep(0.5)
        assert not task.done()
        await asyncio.get_running_loop().run_in_executor(None, own.start)
        events = await asyncio.wait_for(task, 60)
        assert [e.kind for e in events] == ["payment_detected"] and events[0].data["txid"] == txid
        await container.shutdown_resources()
    finally:
        await rpc.close()
        own.stop()
